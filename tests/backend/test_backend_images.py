"""illume.images: every way an image may come in, and every refusal with its reason."""
from __future__ import annotations

import base64
import http.server
import io
import json
import threading

import pytest
from PIL import Image

from backend_helpers import data_uri, png_bytes
from illume.errors import IllumeError
from illume.labelstudio.client import LabelStudioClient
from illume.images import ImagePolicy, load_image


def test_local_path_under_root_loads(image_root):
    image = load_image(str(image_root / "red.png"), ImagePolicy(allowed_roots=[image_root]))
    assert image.size == (48, 40) and image.getpixel((0, 0)) == (255, 0, 0)


def test_relative_path_is_looked_up_under_the_roots(image_root):
    assert load_image("blue.png", ImagePolicy(allowed_roots=[image_root])).getpixel((1, 1)) == (0, 0, 255)
    assert load_image(f"file://{image_root}/blue.png", ImagePolicy(allowed_roots=[image_root])).size == (48, 40)


def test_path_traversal_is_refused(image_root, tmp_path):
    (tmp_path / "secret.png").write_bytes(png_bytes())
    with pytest.raises(IllumeError, match="outside the allowed roots"):
        load_image(str(image_root / ".." / "secret.png"), ImagePolicy(allowed_roots=[image_root]))
    with pytest.raises(IllumeError, match="outside the allowed roots"):
        load_image("../secret.png", ImagePolicy(allowed_roots=[image_root]))


def test_symlink_out_of_root_is_refused(image_root, tmp_path):
    (tmp_path / "outside.png").write_bytes(png_bytes())
    (image_root / "link.png").symlink_to(tmp_path / "outside.png")
    with pytest.raises(IllumeError, match="outside the allowed roots"):
        load_image(str(image_root / "link.png"), ImagePolicy(allowed_roots=[image_root]))


def test_local_path_without_roots_is_refused(image_root):
    with pytest.raises(IllumeError, match="no allowed roots"):
        load_image(str(image_root / "red.png"), ImagePolicy())


def test_missing_file(image_root):
    with pytest.raises(IllumeError, match="does not exist"):
        load_image(str(image_root / "nope.png"), ImagePolicy(allowed_roots=[image_root]))


def test_unreadable_file(image_root):
    (image_root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(IllumeError, match="not a readable image"):
        load_image(str(image_root / "broken.png"), ImagePolicy(allowed_roots=[image_root]))


def test_byte_limit(image_root):
    with pytest.raises(IllumeError, match="over the limit of 100"):
        load_image(str(image_root / "red.png"), ImagePolicy(allowed_roots=[image_root], max_bytes=100))
    with pytest.raises(IllumeError, match="over the limit of 100"):
        load_image(data_uri(), ImagePolicy(max_bytes=100))


def test_pixel_limit_checked_before_decoding(image_root):
    (image_root / "wide.png").write_bytes(png_bytes(size=(400, 300)))
    with pytest.raises(IllumeError, match="120000 pixels, over the limit of 10000"):
        load_image(str(image_root / "wide.png"), ImagePolicy(allowed_roots=[image_root], max_pixels=10_000))


@pytest.mark.parametrize("kind", ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"])
def test_every_accepted_format_decodes(kind):
    buffer = io.BytesIO()
    Image.new("RGB", (12, 10), "red").save(buffer, kind)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    image = load_image(f"data:image/{kind.lower()};base64,{encoded}", ImagePolicy())
    assert image.size == (12, 10) and image.mode == "RGB"


def test_a_format_outside_the_list_is_refused_with_the_list():
    svg = base64.b64encode(b'<svg xmlns="http://www.w3.org/2000/svg"/>').decode()
    with pytest.raises(IllumeError, match=r"not a readable image in an accepted format \(PNG, JPEG, WEBP, GIF, BMP, "
                                          r"TIFF\) \(UnidentifiedImageError"):
        load_image(f"data:image/svg+xml;base64,{svg}", ImagePolicy())


def test_data_uri(image_root):
    assert load_image(data_uri("blue"), ImagePolicy()).getpixel((0, 0)) == (0, 0, 255)
    with pytest.raises(IllumeError, match="not a base64 image"):
        load_image("data:text/plain,hello", ImagePolicy())
    with pytest.raises(IllumeError, match="invalid base64"):
        load_image("data:image/png;base64,@@@@", ImagePolicy())


def test_disallowed_host_and_scheme():
    with pytest.raises(IllumeError, match=r"host 'example.com' \(port 443\) is not in the allowed hosts"):
        load_image("https://example.com/cat.png", ImagePolicy(allowed_hosts=["images.example.org"]))
    with pytest.raises(IllumeError, match="scheme 'ftp' is not supported"):
        load_image("ftp://example.com/cat.png", ImagePolicy())
    with pytest.raises(IllumeError, match="no Label Studio URL"):
        load_image("/data/upload/1/cat.png", ImagePolicy())


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves a PNG at /ok.png, a redirect at /moved, and a token exchange for JWTs."""

    seen_auth: list[str] = []
    exchanges = 0

    def do_GET(self):  # noqa: N802 (http.server's naming)
        _Handler.seen_auth.append(self.headers.get("Authorization", ""))
        if self.headers.get("Authorization") == f"Bearer {_jwt('access', 1)}":  # the first access token has expired
            self.send_response(401)
            self.end_headers()
            return
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/ok.png")
            self.end_headers()
            return
        if self.path.startswith(("/ok.png", "/data/upload/", "/data/local-files/")):
            body = png_bytes("green")
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(404)
        self.end_headers()

    def do_POST(self):  # noqa: N802
        json.loads(self.rfile.read(int(self.headers["Content-Length"])))["refresh"]
        _Handler.exchanges += 1
        payload = json.dumps({"access": _jwt("access", _Handler.exchanges)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Handler.seen_auth, _Handler.exchanges = [], 0
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_allowed_host_loads_and_redirects_are_not_followed(http_server):
    policy = ImagePolicy(allowed_hosts=[http_server.removeprefix("http://")])
    assert load_image(f"{http_server}/ok.png", policy).getpixel((0, 0)) == (0, 128, 0)
    with pytest.raises(IllumeError, match="redirects"):
        load_image(f"{http_server}/moved", policy)
    with pytest.raises(IllumeError, match="HTTP 404"):
        load_image(f"{http_server}/missing.png", policy)
    with pytest.raises(IllumeError, match="over the limit of 50"):
        load_image(f"{http_server}/ok.png", ImagePolicy(allowed_hosts=policy.allowed_hosts, max_bytes=50))


def _jwt(kind: str = "refresh", number: int = 0) -> str:
    """A token shaped like Label Studio's (the SDK reads its type and expiry, never its signature)."""
    part = lambda obj: base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")  # noqa: E731
    claims = {"token_type": kind, "exp": 4102444800, "jti": str(number)}
    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


def test_label_studio_urls_use_the_api_key(http_server):
    legacy = ImagePolicy(label_studio=LabelStudioClient(http_server, "abc123"))
    assert load_image("/data/upload/1/x.png", legacy).size == (48, 40)
    assert load_image(f"{http_server}/data/upload/1/x.png", legacy).size == (48, 40)
    assert _Handler.seen_auth[-2:] == ["Token abc123", "Token abc123"]

    personal = ImagePolicy(label_studio=LabelStudioClient(http_server, _jwt()))
    assert personal.label_studio.is_personal_token and not legacy.label_studio.is_personal_token
    load_image("/data/local-files/?d=images/x.png", personal)  # access token renewed once
    assert _Handler.seen_auth[-2:] == [f"Bearer {_jwt('access', 1)}", f"Bearer {_jwt('access', 2)}"]
    load_image("/data/upload/1/x.png", personal)
    assert _Handler.seen_auth[-1] == f"Bearer {_jwt('access', 2)}" and _Handler.exchanges == 2


def test_personal_token_refused_by_label_studio_says_so():
    auth = LabelStudioClient("http://127.0.0.1:9", _jwt(), timeout=2)
    with pytest.raises(IllumeError, match="could not reach Label Studio"):
        auth.headers()


def encoded(size: tuple[int, int], fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.radial_gradient("L").resize(size).convert("RGB").save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_large_images_are_decoded_reduced_but_never_below_the_processor_side(fmt):
    from illume.images import decode_image

    data = encoded((3000, 2000), fmt)
    full = decode_image(data, "big", ImagePolicy())
    reduced = decode_image(data, "big", ImagePolicy(decode_side=300))
    assert full.size == (3000, 2000) and reduced.mode == "RGB"
    assert 300 <= min(reduced.size) < 600 and reduced.size[0] / reduced.size[1] == pytest.approx(1.5, rel=0.01)
    assert decode_image(encoded((500, 400), fmt), "small", ImagePolicy(decode_side=300)).size == (500, 400)


def test_the_backend_reads_the_decode_side_from_the_processor(llava, make_settings):
    from ml_backend.app import create_app
    from ml_backend.model_holder import Loaded, ModelHolder, processor_side

    side = processor_side(llava.processor)
    assert side > 0
    settings = make_settings()
    create_app(settings, ModelHolder(Loaded(llava, "v"), device="cpu"))
    assert settings.images.decode_side == side
    settings = make_settings(decode_side=0)
    create_app(settings, ModelHolder(Loaded(llava, "v"), device="cpu"))
    assert settings.images.decode_side == 0
