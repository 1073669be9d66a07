"""Secure image loading, shared by the ML backend and the connector.

An image reference is one of
  - a Label Studio URL (`/data/upload/...`, `/data/local-files/?d=...`, relative or on
    LABEL_STUDIO_URL), fetched from Label Studio with LABEL_STUDIO_API_KEY,
  - an http(s) URL on an allowed host (no redirects followed),
  - a local path under an allowed root (symlinks resolved, so `..` and links cannot escape),
  - a `data:image/...;base64,` URI.
Every image is checked against a byte-size and a pixel limit before it is decoded.
Each refusal is an IllumeError that names the reason.

Label Studio API keys come in two kinds: legacy tokens (sent as `Token <key>`) and personal
access tokens, which are JWT refresh tokens: they are exchanged at /api/token/refresh/ for
a short-lived access token sent as `Bearer <access>` (renewed when it expires).
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import os
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import requests
from PIL import Image

from illume.errors import IllumeError

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000
LABEL_STUDIO_PATHS = ("/data/upload/", "/data/local-files/")


def looks_like_jwt(key: str) -> bool:
    """Personal access tokens are JWTs (header.payload.signature, header says `alg`)."""
    parts = key.split(".")
    if len(parts) != 3:
        return False
    try:
        header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except (ValueError, binascii.Error):
        return False
    return isinstance(header, dict) and "alg" in header


class LabelStudioAuth:
    """Authorization headers for Label Studio's API from either kind of API key."""

    def __init__(self, url: str, api_key: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key.strip()
        self.timeout = timeout
        self._access: str | None = None
        self._lock = threading.Lock()

    @property
    def is_personal_token(self) -> bool:
        return looks_like_jwt(self.api_key)

    def headers(self, renew: bool = False) -> dict[str, str]:
        if not self.is_personal_token:
            return {"Authorization": f"Token {self.api_key}"}
        with self._lock:
            if renew or self._access is None:
                self._access = self._exchange()
            return {"Authorization": f"Bearer {self._access}"}

    def _exchange(self) -> str:
        try:
            response = requests.post(f"{self.url}/api/token/refresh/", json={"refresh": self.api_key},
                                     timeout=self.timeout)
        except requests.RequestException as exc:
            raise IllumeError(f"could not reach Label Studio at {self.url} to exchange the API key: {exc}",
                              "Check LABEL_STUDIO_URL and that Label Studio is running.") from exc
        if response.status_code != 200 or "access" not in response.json():
            raise IllumeError(f"Label Studio refused the personal access token (HTTP {response.status_code})",
                              "Create a new personal access token in Label Studio (Account & Settings) "
                              "and set LABEL_STUDIO_API_KEY to it.")
        return response.json()["access"]

    def request(self, method: str, path_or_url: str, **kwargs) -> requests.Response:
        """One authenticated request; a personal token is renewed once when the access token expired."""
        url = path_or_url if "://" in path_or_url else f"{self.url}{path_or_url}"
        kwargs.setdefault("timeout", self.timeout)
        response = requests.request(method, url, headers=self.headers(), **kwargs)
        if response.status_code == 401 and self.is_personal_token:
            response = requests.request(method, url, headers=self.headers(renew=True), **kwargs)
        return response


@dataclass
class ImagePolicy:
    """Where images may come from and how big they may be."""

    allowed_roots: list[Path] = field(default_factory=list)
    allowed_hosts: list[str] = field(default_factory=list)
    label_studio_url: str | None = None
    label_studio_api_key: str | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    timeout: float = 15.0
    _auth: LabelStudioAuth | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.allowed_roots = [Path(root).resolve() for root in self.allowed_roots]
        self.allowed_hosts = [host.lower() for host in self.allowed_hosts]
        if self.label_studio_url and self.label_studio_api_key:
            self._auth = LabelStudioAuth(self.label_studio_url, self.label_studio_api_key, self.timeout)

    @classmethod
    def from_env(cls, **overrides) -> "ImagePolicy":
        """LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY, ILLUME_ALLOWED_ROOTS / _HOSTS (comma-separated)."""
        values = dict(
            allowed_roots=split_list(os.environ.get("ILLUME_ALLOWED_ROOTS", "")),
            allowed_hosts=split_list(os.environ.get("ILLUME_ALLOWED_HOSTS", "")),
            label_studio_url=os.environ.get("LABEL_STUDIO_URL") or None,
            label_studio_api_key=os.environ.get("LABEL_STUDIO_API_KEY") or None,
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def label_studio(self) -> LabelStudioAuth | None:
        return self._auth


def split_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def load_image(ref: str, policy: ImagePolicy) -> Image.Image:
    """Load one image reference under the policy; the result is a fully decoded RGB image."""
    if not isinstance(ref, str) or not ref.strip():
        raise IllumeError("the image reference is empty", "Give the task an image URL, path or data: URI.")
    ref = ref.strip()
    if ref.startswith("data:"):
        return decode_image(_data_uri_bytes(ref, policy), ref[:40], policy)
    if _is_label_studio_ref(ref, policy):
        return decode_image(_fetch_label_studio(ref, policy), ref, policy)
    scheme = urlsplit(ref).scheme.lower()
    if scheme in ("http", "https"):
        return decode_image(_fetch_http(ref, policy), ref, policy)
    if scheme and scheme != "file" and len(scheme) > 1:  # a one-letter scheme is a Windows drive
        raise IllumeError(f"image {ref}: scheme {scheme!r} is not supported",
                          "Use an http(s) URL, a Label Studio URL, a local path or a data: URI.")
    return decode_image(_read_local(ref, policy), ref, policy)


def decode_image(data: bytes, name: str, policy: ImagePolicy) -> Image.Image:
    """Check the pixel count from the header before decoding, then decode fully."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > policy.max_pixels:
                raise IllumeError(f"image {name} has {width}x{height} = {width * height} pixels, "
                                  f"over the limit of {policy.max_pixels}",
                                  "Downscale the image, or raise the pixel limit (--max-pixels).")
            image.load()
    except IllumeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise IllumeError(f"image {name} is too large to decode safely ({exc})",
                          "Downscale the image, or raise the pixel limit (--max-pixels).") from exc
    except Exception as exc:  # PIL raises several types for corrupt files
        raise IllumeError(f"image {name} is not a readable image ({type(exc).__name__}: {exc})",
                          "Check that the file is a complete PNG/JPEG/WebP image.") from exc
    return image.convert("RGB")


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
    parts = urlsplit(ref)
    if not parts.path.startswith(LABEL_STUDIO_PATHS):
        return False
    if not parts.scheme:
        return True
    if not policy.label_studio_url:
        return False
    ls = urlsplit(policy.label_studio_url)
    return (parts.scheme, parts.netloc) == (ls.scheme, ls.netloc)


def _fetch_label_studio(ref: str, policy: ImagePolicy) -> bytes:
    auth = policy.label_studio
    if auth is None:
        raise IllumeError(f"image {ref} is stored in Label Studio, but no Label Studio URL and API key are set",
                          "Set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY for the backend.")
    parts = urlsplit(ref)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        response = auth.request("GET", urljoin(auth.url + "/", path.lstrip("/")), stream=True, allow_redirects=False)
    except requests.RequestException as exc:
        raise IllumeError(f"image {ref}: could not reach Label Studio ({exc})",
                          "Check LABEL_STUDIO_URL and that Label Studio is running.") from exc
    return _read_response(response, ref, policy)


def _fetch_http(ref: str, policy: ImagePolicy) -> bytes:
    host = (urlsplit(ref).hostname or "").lower()
    if host not in policy.allowed_hosts:
        raise IllumeError(f"image {ref}: host {host!r} is not in the allowed hosts",
                          "Add the host to --allowed-hosts (ILLUME_ALLOWED_HOSTS), or import the image into Label Studio.")
    try:
        response = requests.get(ref, stream=True, timeout=policy.timeout, allow_redirects=False)
    except requests.RequestException as exc:
        raise IllumeError(f"image {ref}: download failed ({exc})", "Check that the URL is reachable.") from exc
    return _read_response(response, ref, policy)


def _read_response(response: requests.Response, ref: str, policy: ImagePolicy) -> bytes:
    with response:
        if response.is_redirect:
            raise IllumeError(f"image {ref}: the server redirects (HTTP {response.status_code}), which is not followed",
                              "Use the final URL of the image.")
        if response.status_code != 200:
            raise IllumeError(f"image {ref}: HTTP {response.status_code}",
                              "Check that the image exists and that the API key may read it.")
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > policy.max_bytes:
            raise _too_big(ref, declared, policy)
        chunks, total = [], 0
        for chunk in response.iter_content(64 * 1024):
            total += len(chunk)
            if total > policy.max_bytes:
                raise _too_big(ref, f"more than {policy.max_bytes}", policy)
            chunks.append(chunk)
    return b"".join(chunks)


def _read_local(ref: str, policy: ImagePolicy) -> bytes:
    if ref.startswith("file://"):
        ref = unquote(urlsplit(ref).path)
    if not policy.allowed_roots:
        raise IllumeError(f"image {ref} is a local path, but no allowed roots are configured",
                          "Pass --allowed-roots (ILLUME_ALLOWED_ROOTS) with the folders images may be read from.")
    path = Path(ref).expanduser()
    resolved = path.resolve() if path.is_absolute() else None
    if resolved is None:  # relative paths are looked up under each allowed root
        for root in policy.allowed_roots:
            candidate = (root / path).resolve()
            if candidate.is_relative_to(root) and candidate.exists():
                resolved = candidate
                break
        else:
            resolved = (policy.allowed_roots[0] / path).resolve()
    if not any(resolved.is_relative_to(root) for root in policy.allowed_roots):
        raise IllumeError(f"image {ref} resolves to {resolved}, outside the allowed roots",
                          "Move the image under an allowed root, or add its folder to --allowed-roots.")
    if not resolved.is_file():
        raise IllumeError(f"image {ref} does not exist ({resolved})", "Check the path in the task data.")
    size = resolved.stat().st_size
    if size > policy.max_bytes:
        raise _too_big(ref, size, policy)
    return resolved.read_bytes()
