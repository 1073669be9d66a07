"""Copy each exported task's image into `<export>/images/` so training is self-contained.

Sources: Label Studio URLs (`/data/upload/...`, `/data/local-files/?d=...`, fetched with the
API key), other http(s) URLs, `data:` URIs and local paths. One file per distinct source,
named by a hash of the source, so re-exports write the same names and shared images are
fetched once.
"""
from __future__ import annotations

import base64
import hashlib
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlparse

import requests

from illume.errors import IllumeError

if TYPE_CHECKING:
    from connector.client import LabelStudioClient

IMAGES_DIR = "images"
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
    """Fetches images into one export directory; remembers what it already wrote."""

    def __init__(self, export_dir: Path, client: "LabelStudioClient | None" = None,
                 base_dir: Path | None = None) -> None:
        self.export_dir = Path(export_dir)
        self.images = self.export_dir / IMAGES_DIR
        self.images.mkdir(parents=True, exist_ok=True)
        self.client = client
        self.base_dir = base_dir  # resolves relative local paths
        self.written: dict[str, str] = {}  # source -> path relative to the export dir
        self.reusable: dict[str, Path] = {}  # stem -> file of a previous export

    def reuse(self, previous_export: Path) -> None:
        """Take images a previous export already fetched instead of fetching them again."""
        folder = Path(previous_export) / IMAGES_DIR
        if folder.is_dir():
            self.reusable = {p.stem: p for p in folder.iterdir() if p.is_file()}

    def add(self, source: str, context: str = "") -> str:
        """The image's path relative to the export directory (fetched on first use)."""
        known = self.written.get(source)
        if known is not None:
            return known
        stem = source_stem(source)
        previous = self.reusable.get(stem)
        if previous is not None:
            target = self.images / previous.name
            _link_or_copy(previous, target)
        else:
            data = self._read(source, context)
            target = self.images / f"{stem}{suffix_of(source) or sniff_suffix(data)}"
            target.write_bytes(data)
        relative = f"{IMAGES_DIR}/{target.name}"
        self.written[source] = relative
        return relative

    def add_file(self, path: Path) -> str:
        """Carry a file of a previous export over under the same name."""
        target = self.images / path.name
        if not target.exists():
            _link_or_copy(path, target)
        return f"{IMAGES_DIR}/{path.name}"

    def _read(self, source: str, context: str) -> bytes:
        where = f" ({context})" if context else ""
        if source.startswith("data:"):
            try:
                return base64.b64decode(source.split(",", 1)[1])
            except (IndexError, ValueError) as exc:
                raise IllumeError(f"Image data URI{where} is not valid base64", "Fix the task's image field.") from exc
        if source.startswith("/data/") or (self.client is not None and source.startswith(self.client.url)):
            if self.client is None:
                raise IllumeError(f"Image {source}{where} is a Label Studio URL but no server is connected",
                                  "Export from the server (pass --url and --api-key).")
            response = self.client.request("GET", source, expect=(200, 404))
            if response.status_code == 404:
                raise IllumeError(f"Label Studio has no image at {source}{where}",
                                  "Re-import the item's image, or delete the task.")
            return response.content
        if source.startswith(("http://", "https://")):
            try:
                response = requests.get(source, timeout=60)
            except requests.RequestException as exc:
                raise IllumeError(f"Cannot download image {source}{where} ({type(exc).__name__})",
                                  "Check the URL is reachable from this machine.") from exc
            if response.status_code != 200:
                raise IllumeError(f"Downloading image {source}{where} answered HTTP {response.status_code}",
                                  "Check the URL is reachable from this machine.")
            return response.content
        path = Path(source)
        if not path.is_absolute() and self.base_dir is not None:
            path = self.base_dir / path
        if path.is_file():
            return path.read_bytes()
        raise IllumeError(f"Image {source!r}{where} is neither a URL nor an existing file",
                          "Store images as http(s) URLs, Label Studio uploads or local paths.")


def _link_or_copy(source: Path, target: Path) -> None:
    if target.exists():
        return
    try:
        os.link(source, target)  # exports are immutable once written, so sharing inodes is safe
    except OSError:
        shutil.copyfile(source, target)
