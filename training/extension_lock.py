"""Stale torch-extension locks: found before training instead of waited on forever.

DeepSpeed JIT-builds its CPU ops (cpu_adam, ...) through torch.utils.cpp_extension, which
guards each op's build directory with a `lock` file (torch.utils.file_baton.FileBaton):
created with O_EXCL, held open by the building process, removed when the build ends. A build
killed mid-way leaves the file, and every later build spins on it without a word.

Liveness: the owner keeps the file open, so a lock no process has open (per /proc/<pid>/fd)
is stale. Only this machine's processes are visible: on a cache shared between machines, a
lock may belong to a build on another one, so run the check where the cache is local.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from illume.errors import IllumeError

log = logging.getLogger("extension_lock")
LOCK_NAME = "lock"  # torch.utils.cpp_extension's baton file in each op's build directory


@dataclass(frozen=True)
class ExtensionLock:
    path: Path
    inode: int
    owners: tuple[int, ...]  # processes holding it open (a build running now)
    unsure: bool  # some processes could not be inspected (another user's): the owner may be hidden


def extensions_root() -> Path:
    """Where torch builds extensions: TORCH_EXTENSIONS_DIR, else its default cache."""
    configured = os.environ.get("TORCH_EXTENSIONS_DIR")
    if configured:
        return Path(configured)
    from torch.utils.cpp_extension import get_default_build_root

    return Path(get_default_build_root())


def _open_files(proc: Path) -> tuple[dict[tuple[int, int], set[int]], bool]:
    """(device, inode) -> pids holding it open, and whether some process could not be read."""
    held: dict[tuple[int, int], set[int]] = {}
    unsure = False
    for entry in proc.iterdir() if proc.is_dir() else []:
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            descriptors = list((entry / "fd").iterdir())
        except PermissionError:
            unsure = True
            continue
        except OSError:  # the process ended meanwhile
            continue
        for descriptor in descriptors:
            try:
                stat = descriptor.stat()
            except OSError:
                continue
            held.setdefault((stat.st_dev, stat.st_ino), set()).add(int(entry.name))
    return held, unsure


def find_locks(root: Path | None = None, proc: Path = Path("/proc")) -> list[ExtensionLock]:
    """Every op's build lock under the extensions root (TORCH_EXTENSIONS_DIR holds the ops
    directly; the default root one folder per Python/accelerator, e.g. py311_cpu)."""
    root = Path(root) if root is not None else extensions_root()
    paths = sorted({*root.glob(f"*/{LOCK_NAME}"), *root.glob(f"*/*/{LOCK_NAME}")})
    if not paths:
        return []
    held, unsure = _open_files(proc)
    locks = []
    for path in paths:
        try:
            stat = path.stat()
        except FileNotFoundError:  # released meanwhile
            continue
        locks.append(ExtensionLock(path, stat.st_ino, tuple(sorted(held.get((stat.st_dev, stat.st_ino), ()))), unsure))
    return locks


def clear_stale_locks(root: Path | None = None, remove: bool = True,
                      say: Callable[[str], None] = log.warning) -> list[Path]:
    """Remove (or, with remove=False, refuse on) locks whose build process is gone; the paths removed.

    Run it in one process per machine (local rank 0): others wait on the stale lock until it goes.
    """
    removed = []
    for lock in find_locks(root):
        if lock.owners:
            say(f"torch extension lock {lock.path} is held by process {', '.join(map(str, lock.owners))}: a build "
                "is running, training waits for it")
            continue
        advice = (f"If no build of this op runs on any machine sharing {lock.path.parent.parent}, remove it: "
                  f"rm {lock.path}")
        if lock.unsure or not remove:
            why = ("some processes could not be inspected, so its owner may be alive" if lock.unsure
                   else "no process holds it: a build was killed mid-way")
            raise IllumeError(f"torch extension lock {lock.path} would make training wait forever ({why})", advice)
        try:
            if lock.path.stat().st_ino != lock.inode:  # a new build took the lock since we looked
                continue
            lock.path.unlink()
        except FileNotFoundError:
            continue
        say(f"removed stale torch extension lock {lock.path}: no process holds it (a build was killed mid-way)")
        removed.append(lock.path)
    return removed


def check_before_training() -> list[Path]:
    """The training entry point's check: local rank 0 clears stale locks (one process per machine)."""
    if os.environ.get("LOCAL_RANK", "0") != "0":
        return []
    return clear_stale_locks()
