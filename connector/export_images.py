"""Copy each exported task's image into `<export>/images/` so training is self-contained.

Every image is read through the one guarded loader (illume.images) under the export's
ImagePolicy: Label Studio URLs (uploads, local files, and cloud storage objects through
Label Studio's resolve route) with the API key; other http(s) URLs only on the hosts the
operator allowed (`--allow-image-host`); local paths only under the roots they allowed
(`--allow-image-root`); `data:` URIs. Byte and pixel limits apply; redirects are not
followed. A refused image is the caller's to report for its task: nothing is fetched or
copied for it. One file per distinct source, named by a hash of the source, so re-exports
write the same names and shared images are fetched once.

A previous export's images (`--previous`) are taken over only as regular files under its images/
folder (symlinks followed) that pass the same byte, pixel and decode checks: its rows.jsonl names
paths, and a path such as "../secret" or "/etc/passwd" must never be linked into a new export.
"""
from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from illume.errors import IllumeError
from illume.images import ImagePolicy, check_image, storage_ref
from illume.layout import EXPORT_IMAGES

KNOWN_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}
MAGIC = [(b"\x89PNG", ".png"), (b"\xff\xd8", ".jpg"), (b"GIF8", ".gif"), (b"BM", ".bmp")]


def suffix_of(source: str) -> str | None:
    parsed = urlparse(source)
    candidates = [parsed.path] + [v for values in parse_qs(parsed.query).values() for v in values]
    for candidate in candidates:
        suffix = Path(unquote(candidate)).suffix.lower()
        if suffix in KNOWN_SUFFIXES:
            return suffix
    return None


def sniff_suffix(data: bytes) -> str:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return next((suffix for magic, suffix in MAGIC if data.startswith(magic)), ".img")


def source_stem(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:24]


class ImageCollector:
    """Fetches images into one export directory under one image policy; remembers what it wrote."""

    def __init__(self, export_dir: Path, policy: ImagePolicy | None = None) -> None:
        self.export_dir = Path(export_dir)
        self.images = self.export_dir / EXPORT_IMAGES
        self.images.mkdir(parents=True, exist_ok=True)
        self.policy = policy or ImagePolicy()  # by default only data: URIs; widen it explicitly
        self.written: dict[str, str] = {}  # source -> path relative to the export dir
        self.reusable: dict[str, str] = {}  # stem -> file name in a previous export's images/
        self.previous: Path | None = None

    def reuse(self, previous_export: Path) -> None:
        """Take images a previous export already fetched instead of fetching them again."""
        self.previous = Path(previous_export)
        folder = self.previous / EXPORT_IMAGES
        if folder.is_dir():
            self.reusable = {p.stem: p.name for p in folder.iterdir()}

    def add(self, source: str, task_id: int | None = None) -> str:
        """The image's path relative to the export directory (fetched on first use)."""
        known = self.written.get(source)
        if known is not None:
            return known
        checked = check_image(storage_ref(source, task_id), self.policy)  # refused before any I/O
        stem = source_stem(source)
        relative = self._reused(self.reusable.get(stem))
        if relative is None:
            data = checked.fetch()
            checked.decode(data)  # pixel and aspect limits, and a readable image, before it is kept
            target = self.images / f"{stem}{suffix_of(source) or sniff_suffix(data)}"
            target.write_bytes(data)
            relative = f"{EXPORT_IMAGES}/{target.name}"
        self.written[source] = relative
        return relative

    def _reused(self, name: str | None) -> str | None:
        """The previous export's copy of an image, when it passes the carry checks; None: fetch it
        afresh (the source itself passed the policy, only the earlier copy is unusable)."""
        if name is None or self.previous is None:
            return None
        try:
            return self.carry(self.previous, f"{EXPORT_IMAGES}/{name}")
        except IllumeError:
            return None

    def carry(self, previous_export: Path, image: Any) -> str:
        """Carry the image a previous export's row names (a path relative to that export) over under
        the same name; IllumeError unless it is an image file inside that export's images/ folder."""
        root = Path(previous_export).resolve()
        folder = root / EXPORT_IMAGES
        path = _inside(root, image)
        target = self.images / path.name
        if not target.exists():  # one check per file, however many rows share it
            data = self._checked_bytes(path, folder)
            _link_checked(path, target, data)
        return f"{EXPORT_IMAGES}/{path.name}"

    def _checked_bytes(self, path: Path, folder: Path) -> bytes:
        """The file's bytes through the one image loader: this export's limits, read only from `folder`."""
        source = check_image(str(path), replace(self.policy, allowed_roots=[folder]))
        data = source.fetch()
        source.decode(data)
        return data


def file_in_export(root: Path, image: Any) -> Path | None:
    """The file an export's image path names (symlinks followed), when it is a regular file in that
    export's own images/ folder; None otherwise. `root` is resolved; an images/ folder that is itself
    a symlink is refused, since it would widen "inside" to anywhere."""
    folder = root / EXPORT_IMAGES
    try:
        if not (isinstance(image, str) and image.strip() and folder.resolve() == folder):
            return None
        path = (root / image).resolve()
        return path if path.is_relative_to(folder) and path.is_file() else None
    except (OSError, RuntimeError, ValueError):  # a symlink loop; a NUL in the name
        return None


def _inside(root: Path, image: Any) -> Path:
    """`file_in_export`, or an IllumeError saying why the row is not carried over."""
    path = file_in_export(root, image)
    if path is None:
        raise IllumeError(f"the previous export's image {str(image)[:200]!r} is not a file inside its "
                          f"{EXPORT_IMAGES}/ folder ({str(root / EXPORT_IMAGES)[:200]}), so its row is not carried "
                          f"over", f"Restore the previous export's {EXPORT_IMAGES}/ folder as `illume-sync export` "
                          "wrote it, or export without --previous; a carried row only brings its own image file.")
    return path


def _link_checked(path: Path, target: Path, data: bytes) -> None:
    """Share the checked file's inode (exports are immutable once written); the checked bytes
    themselves when it cannot be linked or changed after its check."""
    try:
        os.link(path, target, follow_symlinks=False)
    except OSError:
        target.write_bytes(data)
        return
    info = os.lstat(target)  # not followed: a symlink or FIFO swapped in after the check is no image
    if not stat.S_ISREG(info.st_mode) or info.st_size != len(data) or target.read_bytes() != data:
        target.unlink()
        target.write_bytes(data)
