"""Replace a directory atomically: build it under a temporary name beside the target, then swap.

A kill at any point leaves either the old directory or the new one, never a mix: the swap is
one renameat2(RENAME_EXCHANGE) on Linux; elsewhere two renames, and a leftover `.old-*` of a
kill between them is put back by `remove_stale_temporaries`.
"""
from __future__ import annotations

import ctypes
import glob
import os
import shutil
import tempfile
from pathlib import Path

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def temporary_beside(target: Path) -> Path:
    """A fresh empty directory next to target (same file system, so the swap is a rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    return renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0


def swap_in(work: Path, target: Path) -> None:
    """Make `work` the directory at `target`; the previous one (if any) is removed."""
    if not target.exists():
        os.rename(work, target)
    elif exchange(work, target):
        shutil.rmtree(work)  # now holds the old directory
    else:
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.rename(target, old)
        os.rename(work, target)
        shutil.rmtree(old, ignore_errors=True)
    fsync_dir(target.parent)


def remove_stale_temporaries(target: Path) -> None:
    """Leftovers of a killed replacement (never the target itself, nor a neighbour's)."""
    name = glob.escape(target.name)  # a name like "run*" must not match "run-2"'s leftovers
    for stale in target.parent.glob(f".{name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for old in target.parent.glob(f".{name}.old-*"):
        if not target.exists():
            os.rename(old, target)  # killed between the two renames: restore the previous directory
        else:
            shutil.rmtree(old, ignore_errors=True)


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
