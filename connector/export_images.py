"""Copy each exported task's image into `<export>/images/` so training is self-contained.

Every image is read through the one guarded loader (illume.images) under the export's
ImagePolicy: Label Studio URLs (uploads, local files, and cloud storage objects through
Label Studio's resolve route) with the API key; other http(s) URLs only on the hosts the
operator allowed (`--allow-image-host`); local paths only under the roots they allowed
(`--allow-image-root`); `data:` URIs. Byte and pixel limits apply; redirects are not
followed. A refused image is the caller's to report for its task: nothing is fetched or
copied for it. One file per distinct source, named by a hash of the source, so re-exports
write the same names and shared images are fetched once.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

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
        self.reusable: dict[str, Path] = {}  # stem -> file of a previous export

    def reuse(self, previous_export: Path) -> None:
        """Take images a previous export already fetched instead of fetching them again."""
        folder = Path(previous_export) / EXPORT_IMAGES
        if folder.is_dir():
            self.reusable = {p.stem: p for p in folder.iterdir() if p.is_file()}

    def add(self, source: str, task_id: int | None = None) -> str:
        """The image's path relative to the export directory (fetched on first use)."""
        known = self.written.get(source)
        if known is not None:
            return known
        checked = check_image(storage_ref(source, task_id), self.policy)  # refused before any I/O
        stem = source_stem(source)
        previous = self.reusable.get(stem)
        if previous is not None:
            target = self.images / previous.name
            _link_or_copy(previous, target)
        else:
            data = checked.fetch()
            checked.decode(data)  # pixel and aspect limits, and a readable image, before it is kept
            target = self.images / f"{stem}{suffix_of(source) or sniff_suffix(data)}"
            target.write_bytes(data)
        relative = f"{EXPORT_IMAGES}/{target.name}"
        self.written[source] = relative
        return relative

    def add_file(self, path: Path) -> str:
        """Carry a file of a previous export over under the same name."""
        target = self.images / path.name
        if not target.exists():
            _link_or_copy(path, target)
        return f"{EXPORT_IMAGES}/{path.name}"


def _link_or_copy(source: Path, target: Path) -> None:
    if target.exists():
        return
    try:
        os.link(source, target)  # exports are immutable once written, so sharing inodes is safe
    except OSError:
        shutil.copyfile(source, target)
