"""Images in cloud storage connected to Label Studio are read through Label Studio's resolve
route: streamed by it, or (presigned URLs) redirected to an object host the policy must allow."""
from __future__ import annotations

import base64
import io
from urllib.parse import parse_qs, urlsplit

import pytest
from PIL import Image

from http_helpers import ImageHost, send, serve

from connector.export_images import ImageCollector
from illume.errors import IllumeError
from illume.images import ImagePolicy, load_image, storage_ref
from illume.labelstudio.client import LabelStudioClient


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), "blue").save(buffer, "PNG")
    return buffer.getvalue()


class Servers:
    """A stand-in for Label Studio's resolve route and an object store it presigns URLs on."""

    def __init__(self) -> None:
        self.resolved: list[tuple[str, str]] = []  # (task id, decoded fileuri) Label Studio was asked for
        self.objects = ImageHost(png())
        self.label_studio = serve(self._resolve)
        self.label_studio_url = f"http://127.0.0.1:{self.label_studio.server_address[1]}"

    def _resolve(self, handler) -> None:
        parts = urlsplit(handler.path)
        uri = base64.urlsafe_b64decode(parse_qs(parts.query)["fileuri"][0]).decode()
        self.resolved.append((parts.path.split("/")[2], uri))
        if uri.startswith("gs://"):  # a storage with presigned URLs: redirect to the object
            send(handler, b"", 303, {"Location": f"http://{self.objects.host}/bucket/cat.png?sig=1"})
        else:  # presign off: Label Studio streams the object itself
            send(handler, png())


@pytest.fixture
def servers():
    found = Servers()
    yield found
    found.label_studio.shutdown()
    found.objects.server.shutdown()


def test_storage_uris_become_label_studio_resolve_routes():
    ref = storage_ref("s3://bucket/a b.png", 42)
    assert ref.startswith("/tasks/42/resolve/?fileuri=")
    assert storage_ref("https://example.org/x.png", 42) == "https://example.org/x.png"
    assert storage_ref("s3://bucket/x.png", None) == "s3://bucket/x.png"  # no task: nothing to resolve against


def test_cloud_images_are_read_through_label_studio(servers, tmp_path):
    policy = ImagePolicy(label_studio=LabelStudioClient(servers.label_studio_url, "legacy-token"))
    collector = ImageCollector(tmp_path, policy)
    assert collector.add("s3://bucket/cat.png", task_id=7).startswith("images/")  # streamed by Label Studio
    assert servers.resolved == [("7", "s3://bucket/cat.png")] and servers.objects.requests == 0
    with pytest.raises(IllumeError, match="not in the allowed hosts"):  # presigned: the object host must be allowed
        collector.add("gs://bucket/cat.png", task_id=8)
    assert servers.objects.requests == 0
    widened = ImagePolicy(label_studio=LabelStudioClient(servers.label_studio_url, "legacy-token"),
                          allowed_hosts=[servers.objects.host])
    assert load_image(storage_ref("gs://bucket/cat.png", 8), widened).size == (8, 6)
    assert servers.objects.requests == 1 and servers.objects.with_authorization == 0  # no API key to the store
