"""A normal (non-editable) install works away from the checkout: the wheel carries everything the
code reads at run time (the labeling config and its instructions, the DeepSpeed templates)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DISTRIBUTED = ("pyproject.toml", "README.md", "illume", "ml_backend", "connector", "training", "label_config")

pytestmark = pytest.mark.slow

CHECK = f"""
import os, sys
import illume, training
from connector.project import read_instructions, read_label_config
from illume.labeling_schema import shipped_schema
from training.deepspeed_config import template_path

checkout = {str(REPO)!r}
assert checkout not in [os.path.realpath(p or ".") for p in sys.path], sys.path
assert not any(name.startswith("__editable__") for name in sys.modules), "the editable install was loaded"
assert not illume.__file__.startswith(checkout), illume.__file__
schema = shipped_schema()
assert schema.candidates == "candidates" and schema.rationales, schema
assert "<View" in read_label_config() and read_instructions()
assert template_path(0).is_file() and template_path(3).is_file()
print("shipped:", illume.__file__)
"""


def _run(command: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def test_the_wheel_installed_in_a_fresh_venv_runs_the_cli_and_finds_its_shipped_files(tmp_path):
    # the sources as a checkout holds them (never build inside the checkout: tests write no tracked files)
    source = tmp_path / "source"
    source.mkdir()
    for name in DISTRIBUTED:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(path, source / name)
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
          str(source)], tmp_path, env, 600)
    (wheel,) = wheels.glob("illume_studio-*.whl")

    # a fresh venv that reuses this environment's dependencies through a .pth file (not the
    # project: the .pth names a directory, so the editable install's own .pth there is not run)
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, env, 120)
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     tmp_path, env, 60).stdout.strip())
    (site / "project_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
          str(wheel)], tmp_path, env, 300)

    work = tmp_path / "elsewhere"  # not the checkout: nothing can come from its folders
    work.mkdir()
    help_text = _run([str(venv / "bin" / "illume-sync"), "init", "--help"], work, env, 120).stdout
    assert "--label-config" in help_text and "Usage:" in help_text
    shipped = _run([str(python), "-c", CHECK], work, env, 300).stdout
    assert str(site) in shipped, shipped
