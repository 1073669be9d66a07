"""Stale torch-extension build locks.

DeepSpeed JIT-builds its CPU ops with torch.utils.cpp_extension, which guards each build
directory with a `lock` file (torch.utils.file_baton: created with O_EXCL, held open by the
builder, removed when the build ends). A run killed mid-build leaves the file behind, and every
later build waits on it forever without a word. The file records no owner, but its owner holds
it open: a lock that no live process has open is stale. Before a training run starts, stale
locks are reported with their path and removed; a lock whose owner cannot be ruled out (a
process this user may not inspect) is left alone and reported.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)
LOCK_NAME = "lock"
MAX_DEPTH = 3  # <root>/<python and CUDA tag>/<extension>/lock


def extensions_root() -> Path:
    """Where torch builds extensions: TORCH_EXTENSIONS_DIR, else torch's default cache folder."""
    if os.environ.get("TORCH_EXTENSIONS_DIR"):
        return Path(os.environ["TORCH_EXTENSIONS_DIR"])
    from torch.utils.cpp_extension import get_default_build_root

    return Path(get_default_build_root())


def build_locks(root: Path) -> list[Path]:
    found = []
    for depth in range(1, MAX_DEPTH + 1):
        found += [path for path in root.glob("/".join(["*"] * (depth - 1) + [LOCK_NAME])) if path.is_file()]
    return sorted(set(found))


def open_files() -> tuple[set[str], int]:
    """Every file some process has open (resolved paths), and how many processes could not be read."""
    held, unreadable = set(), 0
    for process in Path("/proc").iterdir():
        if not process.name.isdigit():
            continue
        try:
            for fd in (process / "fd").iterdir():
                try:
                    held.add(os.readlink(fd))
                except OSError:  # closed meanwhile
                    pass
        except PermissionError:
            unreadable += 1
        except OSError:  # the process ended meanwhile
            pass
    return held, unreadable


def clear_stale_locks(root: Path | None = None) -> list[str]:
    """Remove the build locks no process holds; one sentence per lock found (removed or not)."""
    try:
        root = root or extensions_root()
    except Exception as exc:  # torch missing or its cache folder unknown: nothing to check
        log.debug("torch extensions folder unknown: %s", exc)
        return []
    locks = build_locks(root) if root.is_dir() else []
    if not locks:
        return []
    held, unreadable = open_files()
    notes = []
    for lock in locks:
        if str(lock.resolve()) in held:
            continue  # a build is running
        if unreadable:
            notes.append(f"torch extension build lock {lock} may be stale (no process of this user holds it; "
                         f"{unreadable} processes could not be checked): if no build runs, delete it")
            continue
        try:
            lock.unlink()
            notes.append(f"removed a stale torch extension build lock {lock} (left by a killed build; "
                         "every later build would have waited on it forever)")
        except OSError as exc:
            notes.append(f"torch extension build lock {lock} is stale but could not be removed ({exc}): delete it")
    for note in notes:
        log.warning("%s", note)
    return notes
