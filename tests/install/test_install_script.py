"""scripts/install.sh on the machines users have: started by Debian's externally managed
/usr/bin/python3 it builds the project's own .venv and never writes into that interpreter."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = Path("/usr/bin/python3")


def _copy_checkout(target: Path) -> Path:
    """Tracked and untracked-but-not-ignored files, as a fresh clone of this work tree would have."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                           capture_output=True).stdout.split(b"\0")
    for name in filter(None, files):
        source = REPO / os.fsdecode(name)
        if source.is_file():
            destination = target / os.fsdecode(name)
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(source.read_bytes())
            destination.chmod(source.stat().st_mode)
    return target


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    # the Label Studio environment the test session already has; building another adds minutes
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if Path(sys.prefix) not in Path(p).parents)
    env.update(extra)
    return env


def _system_state() -> tuple[str, list[str]]:
    """What /usr/bin/python3 has installed: pip's list and its site-packages folders' contents."""
    pip = subprocess.run([SYSTEM_PYTHON, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True)
    dirs = subprocess.run([SYSTEM_PYTHON, "-c", "import site, sys; print('\\n'.join(site.getsitepackages() + "
                           "[site.getusersitepackages()]))"], capture_output=True, text=True, check=True).stdout.split()
    listing = sorted(f"{d}/{n}" for d in dirs if Path(d).is_dir() for n in os.listdir(d))
    return pip.stdout, listing


def _externally_managed() -> bool:
    found = subprocess.run([SYSTEM_PYTHON, "-c", "import sysconfig, os; print(os.path.isfile(os.path.join("
                            "sysconfig.get_path('stdlib'), 'EXTERNALLY-MANAGED')))"], capture_output=True, text=True)
    return found.stdout.strip() == "True"


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_install_from_debians_externally_managed_python_builds_a_project_venv(tmp_path):
    if not SYSTEM_PYTHON.is_file() or not _externally_managed():
        pytest.skip("needs Debian's externally managed /usr/bin/python3")
    checkout = _copy_checkout(tmp_path / "checkout")
    before = _system_state()

    run = subprocess.run(["bash", "scripts/install.sh"], cwd=checkout, capture_output=True, text=True,
                         env=_clean_env(PYTHON=str(SYSTEM_PYTHON)), timeout=1700)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "creating the project environment" in run.stdout

    venv = checkout / ".venv"
    help_text = subprocess.run([venv / "bin" / "illume-sync", "--help"], capture_output=True, text=True, check=True)
    assert "export" in help_text.stdout and "train" in help_text.stdout
    probe = subprocess.run([venv / "bin" / "python", "-c",
                            "import sys, torch, transformers, peft, deepspeed, label_studio_sdk, illume, connector, "
                            "ml_backend, training; print(sys.prefix); print(torch.__version__)"],
                           capture_output=True, text=True, check=True)
    prefix, torch_version = probe.stdout.split()[-2:]
    assert Path(prefix) == venv and torch_version.startswith("2.")
    assert _system_state() == before, "install.sh changed what /usr/bin/python3 has installed"

    again = subprocess.run(["bash", "scripts/install.sh"], cwd=checkout, capture_output=True, text=True,
                           env=_clean_env(PYTHON=str(SYSTEM_PYTHON)), timeout=600)
    assert again.returncode == 0 and "installing" not in again.stdout, again.stdout  # idempotent


def test_install_reuses_an_active_virtual_environment(tmp_path):
    checkout = _copy_checkout(tmp_path / "checkout")
    run = subprocess.run(["bash", "scripts/install.sh"], cwd=checkout, capture_output=True, text=True,
                         env=_clean_env(VIRTUAL_ENV=sys.prefix), timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert not (checkout / ".venv").exists()
    assert f"source {sys.prefix}/bin/activate" in run.stdout


def test_install_refuses_an_old_python_with_a_clear_message(tmp_path):
    checkout = _copy_checkout(tmp_path / "checkout")
    old_python = tmp_path / "python3.8"
    old_python.write_text('#!/bin/sh\ncase "$2" in *print*) echo 3.8;; *) exit 1;; esac\n')
    old_python.chmod(0o755)
    run = subprocess.run(["bash", "scripts/install.sh"], cwd=checkout, capture_output=True, text=True,
                         env=_clean_env(PYTHON=str(old_python)), timeout=60)
    assert run.returncode == 1
    assert "is Python 3.8; ILLUME Studio needs 3.10 or newer (tested: 3.11)" in run.stderr
    assert not (checkout / ".venv").exists()
