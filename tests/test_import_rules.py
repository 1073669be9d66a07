"""The layering rule (shared/ARCHITECTURE.md), read from the code: no import climbs or crosses.

  illume/ (core)        imports no other part, and not illume.labelstudio
  illume/labelstudio/   imports illume only
  ml_backend/           imports illume only
  training/             imports illume only
  connector/            imports illume only: it talks to the backend over HTTP and to training
                        through a subprocess and the export directory

Every import counts, those inside functions and under TYPE_CHECKING too.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("illume", "ml_backend", "connector", "training")
LABEL_STUDIO = "illume.labelstudio"


def allowed(importer: str, imported: str) -> bool:
    """May module `importer` import `imported` (both dotted names of this project)?"""
    top = imported.split(".")[0]
    if importer.startswith(LABEL_STUDIO + ".") or importer == LABEL_STUDIO:
        return top == "illume"
    if importer.split(".")[0] == "illume":
        return top == "illume" and not (imported == LABEL_STUDIO or imported.startswith(LABEL_STUDIO + "."))
    return top in ("illume", importer.split(".")[0])


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) of every import of this project's parts in the file."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import sub` may name a submodule: count it as pkg.sub
            names = [f"{base}.{alias.name}" if (ROOT / base.replace(".", "/") / alias.name).exists()
                     or (ROOT / base.replace(".", "/") / f"{alias.name}.py").exists() else base
                     for alias in node.names]
        else:
            continue
        found += [(node.lineno, name) for name in names if name.split(".")[0] in PARTS]
    return found


def violations() -> list[str]:
    found = []
    for part in PARTS:
        for path in sorted((ROOT / part).rglob("*.py")):
            importer = module_name(path)
            for line, imported in project_imports(path):
                if not allowed(importer, imported):
                    found.append(f"{path.relative_to(ROOT)}:{line}: {importer} imports {imported}, which the "
                                 f"layering forbids ({rule(importer)})")
    return found


def rule(importer: str) -> str:
    if importer.startswith(LABEL_STUDIO):
        return "illume.labelstudio imports illume only"
    if importer.startswith("illume"):
        return "the core imports only itself: pass what it needs in, or move the code into illume"
    if importer.startswith("connector"):
        return "connector imports illume only; it reaches the backend over HTTP and training by subprocess"
    return f"{importer.split('.')[0]} imports illume only; shared code belongs in illume"


def test_no_import_climbs_or_crosses_between_the_parts():
    found = violations()
    assert not found, "imports against the layering:\n" + "\n".join(found)


def test_the_rule_itself_refuses_what_it_should():
    assert not allowed("illume.images", "connector.client")
    assert not allowed("illume.images", "illume.labelstudio.client")
    assert allowed("illume.labelstudio.task", "illume.images")
    assert not allowed("illume.labelstudio.task", "ml_backend.app")
    assert not allowed("ml_backend.app", "connector.cli") and not allowed("ml_backend.app", "training.job")
    assert not allowed("connector.training_job", "training.evaluate")
    assert not allowed("connector.offline_sampling", "ml_backend.app")
    assert not allowed("training.job", "connector.export")
    assert allowed("connector.cli", "illume.labelstudio.client") and allowed("training.job", "illume.vlm")


def test_the_connector_loop_loads_no_torch(tmp_path):
    # the loop reads the training run's files; the run itself (and torch) lives in another process
    probe = "import sys, connector.loop; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False", "importing connector.loop loaded torch"
