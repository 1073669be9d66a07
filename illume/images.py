"""Secure image loading, shared by the ML backend and the connector.

An image reference is one of
  - a Label Studio URL (`/data/upload/...`, `/data/local-files/?d=...`, the storage resolve
    routes; relative or on LABEL_STUDIO_URL), fetched from Label Studio with LABEL_STUDIO_API_KEY
    after its path is normalised (dot segments resolved, percent-encoded ones too): the key is
    only ever sent to those data routes,
  - an http(s) URL on an allowed `host[:port]` (no redirects followed). The URL is parsed once
    and the request is built from the parsed parts; URLs that parsers could read differently
    (backslashes, user info, whitespace or control characters, non-ASCII or percent-encoded
    hosts, IPv6 literals) are refused,
  - a local path under an allowed root (symlinks resolved, so `..` and links cannot escape; the
    file is opened once and the open file itself is checked, so a name swapped meanwhile cannot either),
  - a `data:image/...;base64,` URI.
`check_image` does the checks that need no I/O; `ImageSource.fetch` reads the bytes (bounded in
size and, for downloads, by one overall deadline); `ImageSource.decode` checks pixels and aspect
ratio from the header, then decodes. Each refusal is an IllumeError that names the reason.

Label Studio reads go through the reader the policy is handed (the one Label Studio client,
illume.labelstudio.client.LabelStudioClient: either kind of API key, token exchange and
renewal); the policy builds no client itself.
"""
from __future__ import annotations

import base64
import binascii
import errno
import functools
import io
import os
import posixpath
import re
import stat
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import requests
from PIL import Image

from illume.errors import IllumeError
from illume.options import env_values, option

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_ASPECT_RATIO = 20.0  # long side over short side; processors that keep the short side pay for the rest
DEFAULT_DOWNLOAD_DEADLINE_S = 30.0  # one image's whole download, not one read
MAX_REF_CHARS = 8192  # an image reference that is not a data: URI
# Formats decoded at all: others (EPS runs Ghostscript, and many rarely used decoders) are refused.
IMAGE_FORMATS = ("PNG", "JPEG", "MPO", "WEBP", "GIF", "BMP", "TIFF")
# The only Label Studio routes the API key is sent to: uploaded files, local files, cloud storage resolving.
_LABEL_STUDIO_ROUTES = re.compile(r"/data/upload/.+|/data/local-files/|/storage-data/uploaded/"
                                  r"|/(tasks|projects)/[0-9]+/(resolve|presign)/")
_LABEL_STUDIO_PREFIX = re.compile(r"/+(data/+(upload|local-files)|storage-data|tasks/+[0-9]+|projects/+[0-9]+)(/|$)")
_HOST = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")
_NETLOC = re.compile(r"(?P<host>[^:]+)(:(?P<port>[0-9]{1,5}))?")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"

# O_NOFOLLOW: a last name swapped for a symlink after the check fails; O_NONBLOCK: a FIFO does not wait for a writer
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


class LabelStudioReader(Protocol):
    """What the loader needs of a Label Studio client: its base URL, and an authenticated
    request that returns a `requests` response (bounded here by bytes and time)."""

    url: str

    def read(self, method: str, url: str, **kwargs: Any) -> requests.Response: ...


@dataclass
class ImagePolicy:
    """Where images may come from and how big they may be."""

    # The options and variables of the backend (illume.options), read by offline sampling too.
    allowed_roots: list[Path] = option(help="Comma-separated folders local image paths may be read from.",
                                       env="ILLUME_ALLOWED_ROOTS", parse=lambda text: split_list(text),
                                       default_factory=list)
    allowed_hosts: list[str] = option(help="Comma-separated host or host:port http(s) images may be fetched from "
                                           "(a bare host: port 80 for http, 443 for https).",
                                      env="ILLUME_ALLOWED_HOSTS", parse=lambda text: split_list(text),
                                      default_factory=list)
    label_studio: LabelStudioReader | None = field(default=None, repr=False)  # None: Label Studio URLs are refused
    max_bytes: int = option(DEFAULT_MAX_BYTES, "Largest image file, in bytes.", env="ILLUME_MAX_IMAGE_BYTES", min=1)
    max_pixels: int = option(DEFAULT_MAX_PIXELS, "Largest image, in pixels (width x height).",
                             env="ILLUME_MAX_IMAGE_PIXELS", min=1)
    max_aspect_ratio: float = option(DEFAULT_MAX_ASPECT_RATIO, "Longest over shortest image side.",
                                     env="ILLUME_MAX_ASPECT_RATIO", min=1)
    timeout: float = 15.0  # connecting, and each read
    download_deadline: float = option(DEFAULT_DOWNLOAD_DEADLINE_S, "Seconds for one image's whole download.",
                                      env="ILLUME_DOWNLOAD_DEADLINE", min=0, min_open=True)
    # Images whose shorter side is at least twice this are decoded reduced (JPEG draft, else
    # Image.reduce), never below it: memory follows what the model's processor keeps. 0: full size.
    decode_side: int = 0
    _hosts: set[tuple[str, int | None]] = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        self.allowed_roots = [Path(root).resolve() for root in self.allowed_roots]
        self.allowed_hosts = [host.strip().lower() for host in self.allowed_hosts]
        self._hosts = {_allowed_host(entry) for entry in self.allowed_hosts}

    @classmethod
    def from_env(cls, **overrides) -> "ImagePolicy":
        """The backend's variables (ILLUME_ALLOWED_ROOTS, ...); the Label Studio reader is passed in."""
        return cls(**{**env_values(cls), **{k: v for k, v in overrides.items() if v is not None}})

    def allows(self, url: "HttpUrl") -> bool:
        """A bare allowed host means its scheme's default port only; `host:port` that port."""
        return (url.host, url.port) in self._hosts or (
            url.port == _DEFAULT_PORTS[url.scheme] and (url.host, None) in self._hosts)


def _allowed_host(entry: str) -> tuple[str, int | None]:
    match = _NETLOC.fullmatch(entry)
    if not match or not _HOST.fullmatch(match["host"]) or (match["port"] and not 0 < int(match["port"]) < 65536):
        raise IllumeError(f"allowed host {entry!r} is not a host name or host:port",
                          "List hosts as name or name:port, comma-separated, e.g. images.example.org,cdn.local:8443.")
    return match["host"], int(match["port"]) if match["port"] else None


@dataclass(frozen=True)
class HttpUrl:
    """An http(s) URL parsed once; `url` is rebuilt from these parts and is what gets fetched."""

    scheme: str
    host: str
    port: int
    target: str  # path and query, re-quoted

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{self.target}"


def _refuse_url(ref: str, why: str) -> IllumeError:
    return IllumeError(f"image {ref[:200]}: {why}",
                       "Use a plain http(s)://host[:port]/path URL (percent-encode special characters), "
                       "a Label Studio URL, a local path or a data: URI.")


def _bad_characters(text: str) -> bool:
    return any(ord(c) <= 0x20 or ord(c) == 0x7F or c == "\\" for c in text)


def parse_http_url(ref: str) -> HttpUrl:
    """Parse an http(s) URL strictly, refusing anything two URL parsers could read differently."""
    if _bad_characters(ref) or not ref.isascii():
        raise _refuse_url(ref, "the URL holds whitespace, control, non-ASCII characters or backslashes")
    parts = urlsplit(ref)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise _refuse_url(ref, f"scheme {scheme!r} is not supported")
    if "@" in parts.netloc:
        raise _refuse_url(ref, "URLs with user info (user@host) are refused")
    match = _NETLOC.fullmatch(parts.netloc)
    host = match["host"].lower() if match else ""
    if not match or not _HOST.fullmatch(host):
        raise _refuse_url(ref, f"host {parts.netloc!r} is not a plain host name or IPv4 address")
    port = int(match["port"]) if match["port"] else _DEFAULT_PORTS[scheme]
    if not 0 < port < 65536:
        raise _refuse_url(ref, f"port {port} is out of range")
    target = quote(parts.path or "/", safe=_PATH_SAFE) + (f"?{quote(parts.query, safe=_PATH_SAFE + '?')}"
                                                          if parts.query else "")
    return HttpUrl(scheme, host, port, target)


def label_studio_target(ref: str) -> str:
    """The normalised path and query of a Label Studio data URL; refuses any other route.

    Dot segments are resolved after one percent-decoding (so `%2e%2e` counts as `..`); what is
    still percent-encoded after that (double encoding) is refused.
    """
    if any(ord(c) < 0x20 or ord(c) == 0x7F or c == "\\" for c in ref):
        raise _refuse_url(ref, "the Label Studio URL holds control characters or backslashes")
    parts = urlsplit(ref)
    decoded = unquote(parts.path)
    if "%" in decoded or "\\" in decoded or any(ord(c) < 0x20 for c in decoded):
        raise _refuse_url(ref, "the Label Studio path is encoded twice or holds control characters")
    normal = posixpath.normpath(decoded) + ("/" if decoded.endswith("/") else "")
    if normal.startswith("//") or not _LABEL_STUDIO_ROUTES.fullmatch(normal):
        raise _refuse_url(ref, f"Label Studio path {normal!r} is not one of its data routes "
                               "(/data/upload/, /data/local-files/, storage resolve)")
    query = urlencode(parse_qsl(parts.query, keep_blank_values=True)) if parts.query else ""
    return quote(normal, safe="/") + (f"?{query}" if query else "")


def split_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


@dataclass(frozen=True)
class ImageSource:
    """A checked image reference: `fetch` reads its bytes, `decode` turns them into an RGB image."""

    ref: str
    kind: str  # data | label_studio | http | local
    policy: ImagePolicy = field(repr=False)
    target: str | HttpUrl | None = None  # the Label Studio path or the parsed URL, as checked

    @property
    def name(self) -> str:
        return self.ref[:40] + "..." if self.kind == "data" else self.ref[:200]

    def fetch(self) -> bytes:
        if self.kind == "data":
            return _data_uri_bytes(self.ref, self.policy)
        if self.kind == "label_studio":
            return _fetch_label_studio(self, self.policy)
        if self.kind == "http":
            return _fetch_http(self, self.policy)
        return _read_local(self.ref, self.policy)

    def decode(self, data: bytes) -> Image.Image:
        return decode_image(data, self.name, self.policy)

    @property
    def host_key(self) -> str | None:
        """What `fetch` waits on, for per-host download limits: an http host:port, Label Studio or
        the local disk (None: a data: URI, nothing to wait for)."""
        if self.kind == "http":
            return f"http://{self.target.host}:{self.target.port}"
        return None if self.kind == "data" else self.kind


CLOUD_SCHEMES = ("s3", "gs", "azure-blob", "azure-spi")  # Label Studio's cloud storage URIs


def storage_ref(ref: str, task_id: int | None) -> str:
    """A cloud storage URI of a task (s3://, gs://, azure-blob://) as Label Studio's resolve route,
    which reads it with the storage connection's credentials; any other reference unchanged."""
    scheme = ref.split("://", 1)[0].lower() if isinstance(ref, str) and "://" in ref[:20] else ""
    if scheme not in CLOUD_SCHEMES or task_id is None:
        return ref
    encoded = base64.urlsafe_b64encode(ref.encode("utf-8")).decode("ascii")
    return f"/tasks/{int(task_id)}/resolve/?{urlencode({'fileuri': encoded})}"


def check_image(ref: str, policy: ImagePolicy) -> ImageSource:
    """Everything about an image reference that can be checked without I/O."""
    try:
        return _check_image(ref, policy)
    except ValueError as exc:  # urlsplit refuses some malformed URLs itself (e.g. an unclosed IPv6 bracket)
        raise _refuse_url(ref, f"the URL is malformed ({exc})") from exc


def _check_image(ref: str, policy: ImagePolicy) -> ImageSource:
    if not isinstance(ref, str) or not ref.strip():
        raise IllumeError("the image reference is empty", "Give the task an image URL, path or data: URI.")
    ref = ref.strip()
    if ref.startswith("data:"):
        return ImageSource(ref, "data", policy)
    if len(ref) > MAX_REF_CHARS:
        raise IllumeError(f"image reference {ref[:60]}... is {len(ref)} characters long, over {MAX_REF_CHARS}",
                          "Use a shorter URL or path, or a data: URI.")
    if _is_label_studio_ref(ref, policy):
        return ImageSource(ref, "label_studio", policy, label_studio_target(ref))
    scheme = urlsplit(ref).scheme.lower() if not _bad_characters(ref[:10]) else "?"
    if scheme in ("http", "https"):
        url = parse_http_url(ref)
        if not policy.allows(url):
            raise IllumeError(f"image {ref[:200]}: host {url.host!r} (port {url.port}) is not in the allowed hosts",
                              "Add host or host:port to --allowed-hosts (ILLUME_ALLOWED_HOSTS), "
                              "or import the image into Label Studio.")
        return ImageSource(ref, "http", policy, url)
    if scheme and scheme != "file" and len(scheme) > 1:  # a one-letter scheme is a Windows drive
        raise IllumeError(f"image {ref[:200]}: scheme {scheme!r} is not supported",
                          "Use an http(s) URL, a Label Studio URL, a local path or a data: URI.")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in ref):
        raise IllumeError(f"image path {ref[:200]!r} holds control characters", "Check the path in the task data.")
    return ImageSource(ref, "local", policy)


def load_image(ref: str, policy: ImagePolicy) -> Image.Image:
    """Load one image reference under the policy; the result is a fully decoded RGB image."""
    source = check_image(ref, policy)
    return source.decode(source.fetch())


def load_local_image(path: str | os.PathLike) -> Image.Image:
    """A local file its caller chose (an export's copied images, held-out items), read with the
    loader's byte, pixel and aspect-ratio limits (training data and evaluation)."""
    resolved = Path(path).resolve()
    return load_image(str(resolved), ImagePolicy(allowed_roots=[resolved.parent]))


@functools.cache
def _registered_formats() -> tuple[str, ...]:
    """IMAGE_FORMATS that this Pillow can open. Image.open raises KeyError for a format it does not
    register (Pillow 13 reads MPO as JPEG and has no "MPO" entry), before trying the later ones."""
    Image.init()
    return tuple(name for name in IMAGE_FORMATS if name in Image.OPEN)


def decode_image(data: bytes, name: str, policy: ImagePolicy) -> Image.Image:
    """Check pixel count and aspect ratio from the header before decoding, then decode fully."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=_registered_formats())
            width, height = image.size
            if width * height > policy.max_pixels:
                raise IllumeError(f"image {name} has {width}x{height} = {width * height} pixels, "
                                  f"over the limit of {policy.max_pixels}",
                                  "Downscale the image, or raise the pixel limit (--max-pixels).")
            if max(width, height) > policy.max_aspect_ratio * max(1, min(width, height)):
                raise IllumeError(f"image {name} is {width}x{height}, an aspect ratio over the limit of "
                                  f"{policy.max_aspect_ratio:g}:1 (after the processor's resize it would cost "
                                  "as much as a far larger image)",
                                  "Crop or pad the image, or raise the limit (--max-aspect-ratio).")
            factor = min(width, height) // policy.decode_side if policy.decode_side else 1
            if factor >= 2 and image.format in ("JPEG", "MPO"):  # decoded at 1/2, 1/4 or 1/8 scale
                image.draft("RGB", (-(-width // factor), -(-height // factor)))
            image.load()
    except IllumeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise IllumeError(f"image {name} is too large to decode safely ({exc})",
                          "Downscale the image, or raise the pixel limit (--max-pixels).") from exc
    except Exception as exc:  # PIL raises several types for corrupt files
        raise IllumeError(f"image {name} is not a readable image in an accepted format "
                          f"({', '.join(_registered_formats())}) ({type(exc).__name__}: {exc})",
                          "Check that the file is a complete PNG/JPEG/WebP image.") from exc
    image = image.convert("RGB")
    factor = min(image.size) // policy.decode_side if policy.decode_side else 1
    return image.reduce(factor) if factor >= 2 else image


def _too_big(name: str, size: int | str, policy: ImagePolicy) -> IllumeError:
    return IllumeError(f"image {name} is {size} bytes, over the limit of {policy.max_bytes}",
                       "Use a smaller image, or raise the byte limit (--max-bytes).")


def _data_uri_bytes(ref: str, policy: ImagePolicy) -> bytes:
    header, sep, payload = ref.partition(",")
    if not sep or not header.startswith("data:image/") or not header.endswith(";base64"):
        raise IllumeError(f"data URI {ref[:40]}... is not a base64 image",
                          "Use the form data:image/png;base64,<data>.")
    if len(payload) * 3 // 4 > policy.max_bytes:
        raise _too_big(ref[:40], f"about {len(payload) * 3 // 4}", policy)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise IllumeError(f"data URI {ref[:40]}... holds invalid base64 ({exc})",
                          "Re-encode the image as base64.") from exc


def _is_label_studio_ref(ref: str, policy: ImagePolicy) -> bool:
    """A path on Label Studio (relative, or absolute on LABEL_STUDIO_URL) that names a data route."""
    parts = urlsplit(ref)
    if not _LABEL_STUDIO_PREFIX.match(unquote(parts.path)):
        return False
    if not parts.scheme and not parts.netloc:
        return True
    if policy.label_studio is None:
        return False
    try:
        url, ls = parse_http_url(ref), parse_http_url(policy.label_studio.url)
    except IllumeError:
        return False
    return (url.scheme, url.host, url.port) == (ls.scheme, ls.host, ls.port)


def _deadline_timeout(policy: ImagePolicy, deadline: float) -> float:
    return max(0.05, min(policy.timeout, deadline - time.monotonic()))


def _fetch_label_studio(source: ImageSource, policy: ImagePolicy) -> bytes:
    auth = policy.label_studio
    if auth is None:
        raise IllumeError(f"image {source.name} is stored in Label Studio, but no Label Studio URL and API key are set",
                          "Set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY for the backend.")
    deadline = time.monotonic() + policy.download_deadline
    base = parse_http_url(auth.url)
    try:
        response = auth.read("GET", base.url.rstrip("/") + source.target, stream=True, allow_redirects=False,
                                headers={"Accept-Encoding": "identity"},
                                timeout=_deadline_timeout(policy, deadline))
    except requests.RequestException as exc:
        raise IllumeError(f"image {source.name}: could not reach Label Studio ({exc})",
                          "Check LABEL_STUDIO_URL and that Label Studio is running.") from exc
    if response.status_code == 303 and "/resolve/" in str(source.target):
        # a cloud storage with presigned URLs: the object's URL is fetched (without the API key)
        # only when its host is allowed, like any other URL
        location = response.headers.get("Location", "")
        response.close()
        presigned = check_image(location, policy)
        if presigned.kind != "http":  # one hop, to an allowed host: never back into Label Studio or the disk
            raise IllumeError(f"image {source.name}: Label Studio resolved it to {location[:200]!r}, not an http(s) URL",
                              "Check the project's cloud storage settings.")
        return presigned.fetch()
    return _read_response(response, source.name, policy, deadline)


def _fetch_http(source: ImageSource, policy: ImagePolicy) -> bytes:
    url = source.target
    assert isinstance(url, HttpUrl)
    deadline = time.monotonic() + policy.download_deadline
    try:
        response = requests.get(url.url, stream=True, timeout=_deadline_timeout(policy, deadline),
                                allow_redirects=False, headers={"Accept-Encoding": "identity"})
    except requests.RequestException as exc:
        raise IllumeError(f"image {source.name}: download failed ({exc})", "Check that the URL is reachable.") from exc
    return _read_response(response, source.name, policy, deadline)


def _read_response(response: requests.Response, name: str, policy: ImagePolicy, deadline: float) -> bytes:
    """Read the body as it arrives, each read bounded by what is left of the overall deadline."""
    with response:
        if response.is_redirect:
            raise IllumeError(f"image {name}: the server redirects (HTTP {response.status_code}), which is not followed",
                              "Use the final URL of the image.")
        if response.status_code != 200:
            raise IllumeError(f"image {name}: HTTP {response.status_code}",
                              "Check that the image exists and that the API key may read it.")
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > policy.max_bytes:
            raise _too_big(name, declared, policy)
        chunks, total = [], 0
        sock = getattr(response.raw.connection, "sock", None)
        while True:
            if time.monotonic() > deadline:
                raise _too_slow(name, policy)
            if sock is not None:
                sock.settimeout(_deadline_timeout(policy, deadline))
            try:
                chunk = response.raw.read1(64 * 1024, decode_content=False)
            except Exception as exc:  # a read timeout surfaces as several urllib3/socket types
                if time.monotonic() >= deadline - 0.1:
                    raise _too_slow(name, policy) from exc
                raise IllumeError(f"image {name}: download failed ({type(exc).__name__}: {exc})",
                                  "Check that the URL is reachable.") from exc
            if not chunk:
                break
            total += len(chunk)
            if total > policy.max_bytes:
                raise _too_big(name, f"more than {policy.max_bytes}", policy)
            chunks.append(chunk)
    return b"".join(chunks)


def _too_slow(name: str, policy: ImagePolicy) -> IllumeError:
    return IllumeError(f"image {name}: the download took longer than the deadline of {policy.download_deadline:g} s",
                       "Serve the image faster, or raise the deadline (--download-deadline).")


def _read_local(ref: str, policy: ImagePolicy) -> bytes:
    name = ref[:200]
    path = _local_path(ref, name)
    if not policy.allowed_roots:
        raise IllumeError(f"image {name} is a local path, but no allowed roots are configured",
                          "Pass --allowed-roots (ILLUME_ALLOWED_ROOTS) with the folders images may be read from.")
    try:
        resolved = _resolve_local(path, policy)
    except (OSError, RuntimeError) as exc:  # RuntimeError: pathlib's symlink loop
        raise _unreadable(name, exc) from exc
    _check_under_roots(name, resolved, policy)
    try:
        fd = os.open(resolved, _OPEN_FLAGS)
    except OSError as exc:
        raise _unreadable(name, exc) from exc
    try:  # what is checked from here on is the open file, not its name
        _check_opened(name, fd, policy)
        with open(fd, "rb", closefd=False) as handle:
            data = handle.read(policy.max_bytes + 1)
    except OSError as exc:
        raise _unreadable(name, exc) from exc
    finally:
        os.close(fd)
    if len(data) > policy.max_bytes:  # it grew after the size check
        raise _too_big(name, f"more than {policy.max_bytes}", policy)
    return data


def _local_path(ref: str, name: str) -> Path:
    """The path of a local reference or file:// URL (on this host); `~` is a name like any other."""
    if ref[:7].lower() == "file://":
        parts = urlsplit(ref)
        if parts.netloc.lower() not in ("", "localhost"):
            raise IllumeError(f"image {name}: file URL host {parts.netloc[:100]!r} is not this machine",
                              "Use file:///path (or file://localhost/path), or a plain local path.")
        ref = unquote(parts.path)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in ref):
        raise IllumeError(f"image path {name!r} holds control characters (percent-encoded ones too)",
                          "Check the path in the task data.")
    return Path(ref)


def _resolve_local(path: Path, policy: ImagePolicy) -> Path:
    """An absolute path resolved; a relative one under the first allowed root that holds it."""
    if path.is_absolute():
        return path.resolve()
    for root in policy.allowed_roots:
        candidate = (root / path).resolve()
        if candidate.is_relative_to(root) and candidate.exists():
            return candidate
    return (policy.allowed_roots[0] / path).resolve()


def _check_under_roots(name: str, path: Path, policy: ImagePolicy) -> None:
    if not any(path.is_relative_to(root) for root in policy.allowed_roots):
        raise IllumeError(f"image {name} resolves to {str(path)[:200]}, outside the allowed roots",
                          "Move the image under an allowed root, or add its folder to --allowed-roots.")


def _check_opened(name: str, fd: int, policy: ImagePolicy) -> None:
    """The open file itself: under a root (a folder swapped for a symlink after the check shows
    here), a regular file, within the byte limit."""
    try:
        opened = _opened_path(fd)
    except OSError as exc:
        raise IllumeError(f"image {name}: cannot tell which file was opened ({exc.strerror})",
                          "Local image paths need Linux's /proc or macOS; use an http(s) URL or Label Studio "
                          "instead.") from exc
    _check_under_roots(name, opened, policy)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise IllumeError(f"image {name} is not a regular file", "Point the task at an image file.")
    if info.st_size > policy.max_bytes:
        raise _too_big(name, info.st_size, policy)


def _opened_path(fd: int) -> Path:
    """The kernel's path of an open file (no second lookup by name): /proc on Linux, F_GETPATH on macOS."""
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        import fcntl  # not on Windows

        if not hasattr(fcntl, "F_GETPATH"):
            raise
        return Path(os.fsdecode(fcntl.fcntl(fd, fcntl.F_GETPATH, bytes(1024)).rstrip(b"\0")))


def _unreadable(name: str, exc: OSError | RuntimeError) -> IllumeError:
    """An OSError as the user's next step, without the full path the exception carries."""
    errno_ = getattr(exc, "errno", None)
    if errno_ in (errno.ENOENT, errno.ENOTDIR):
        return IllumeError(f"image {name} does not exist", "Check the path in the task data.")
    if errno_ == errno.ELOOP or isinstance(exc, RuntimeError):
        return IllumeError(f"image {name}: the path is a symlink loop, or its file was swapped for a symlink",
                           "Point the task at the image file itself, not a symlink.")
    why = os.strerror(errno_) if errno_ else type(exc).__name__
    return IllumeError(f"image {name} cannot be read ({why})",
                       "Check the path in the task data (each name at most 255 bytes) and the file's permissions.")
