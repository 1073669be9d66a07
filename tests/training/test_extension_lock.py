"""A torch-extension build lock left by a killed build is found and removed before training;
one a running build holds is left alone. The locks are made by torch's own FileBaton, in a
real process, as torch.utils.cpp_extension makes them."""
from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from illume.errors import IllumeError
from training.extension_lock import clear_stale_locks, find_locks

HOLD = ("import sys, time; from torch.utils.file_baton import FileBaton; "
        "assert FileBaton(sys.argv[1]).try_acquire(); print('held', flush=True); time.sleep(600)")


def hold_lock(path):
    """A process that takes the op's build lock as torch does and keeps it (a build running)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_killed_builds_lock_is_removed_and_a_running_builds_is_kept(tmp_path, monkeypatch):
    root = tmp_path / "torch_extensions"
    stale, live = root / "py311_cpu" / "cpu_adam" / "lock", root / "py311_cpu" / "cpu_lion" / "lock"
    killed = hold_lock(stale)
    killed.send_signal(signal.SIGKILL)  # the build dies mid-way; its lock stays
    killed.wait()
    running = hold_lock(live)
    try:
        found = {lock.path: lock.owners for lock in find_locks(root)}
        assert found == {stale: (), live: (running.pid,)}
        with pytest.raises(IllumeError, match=f"would make training wait forever.*\n.*rm {stale}"):
            clear_stale_locks(root, remove=False)
        said = []
        assert clear_stale_locks(root, say=said.append) == [stale]
        assert not stale.exists() and live.exists()
        assert any(str(stale) in line and "removed" in line for line in said)
        assert any(str(live) in line and str(running.pid) in line for line in said)
    finally:
        running.kill()
        running.wait()


def test_the_training_entry_point_clears_a_stale_lock_first(tmp_path, monkeypatch, capsys):
    from training.cli import main

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    stale = tmp_path / "ext" / "cpu_adam" / "lock"
    killed = hold_lock(stale)
    killed.kill()
    killed.wait()
    with pytest.raises(SystemExit):  # no export to train on: the job stops after the check
        main(["--export", str(tmp_path / "missing"), "--base-model", str(tmp_path / "none"), "--out", str(tmp_path / "o")])
    assert not stale.exists()
