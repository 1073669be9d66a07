"""`illume-sync import` of s3:// images, end to end: a local S3 (moto's server) connected to a real
Label Studio as the project's storage, Label Studio's resolve route, the backend's candidates."""
from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import time

import pytest
import requests
from click.testing import CliRunner
from PIL import Image

from connector.cli import main
from connector.importing import ImagePlacer, import_items
from connector.predicting import predict_missing
from connector.project import init_project, read_label_config
from illume.errors import IllumeError
from illume.labelstudio.client import LabelStudioClient
from illume.ports import free_port
from illume.records import Item
from test_start_training_live import make_backend

pytestmark = pytest.mark.label_studio
BUCKET = "illume-images"


def png(color: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), color).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def s3(tmp_path):
    """moto's S3 server as its own process, holding two images; its endpoint URL."""
    boto3 = pytest.importorskip("boto3")
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=open(tmp_path / "moto.log", "wb"), stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline:
        try:
            requests.get(endpoint, timeout=2)
            break
        except requests.ConnectionError:
            time.sleep(0.2)  # still starting
    store = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                         aws_secret_access_key="testing")
    store.create_bucket(Bucket=BUCKET)
    for color in ("red", "blue"):
        store.put_object(Bucket=BUCKET, Key=f"shapes/{color}.png", Body=png(color))
    yield endpoint
    process.terminate()
    process.wait(30)


def connect_s3(client: LabelStudioClient, project_id: int, endpoint: str) -> None:
    """The project's S3 source storage, as a team connects it in Settings > Cloud Storage (no sync)."""
    client.post("/api/storages/s3", {"project": project_id, "title": "images", "bucket": BUCKET,
                                     "s3_endpoint": endpoint, "region_name": "us-east-1",
                                     "aws_access_key_id": "testing", "aws_secret_access_key": "testing",
                                     "presign": False, "use_blob_urls": True})


def test_s3_images_import_resolve_through_label_studio_and_get_candidates(label_studio, llava, make_settings, s3,
                                                                          tmp_path):
    client = LabelStudioClient(label_studio.url, label_studio.token)
    items = [Item(f"s3-{color}", f"s3://{BUCKET}/shapes/{color}.png", "what color is the shape?", color,
                  [f"the shape is {color}."]) for color in ("red", "blue")]
    with make_backend(label_studio, llava, make_settings) as server:
        project = init_project(client, f"s3-{time.time_ns()}", read_label_config(), backend_url=server.url).project

        # Without a storage for the bucket Label Studio could not show the image: refused, nothing imported.
        source = tmp_path / "items.jsonl"
        source.write_text("".join(json.dumps({"item_id": i.item_id, "image": i.image, "question": i.question,
                                              "answer": i.answer}) + "\n" for i in items))
        env = {"LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": label_studio.token}
        refused = CliRunner().invoke(main, ["import", "-p", str(project["id"]), str(source)], env=env)
        assert refused.exit_code == 1 and "no s3 storage connected for bucket 'illume-images'" in refused.output
        assert "Cloud Storage" in refused.output and client.get(f"/api/projects/{project['id']}")["task_number"] == 0

        connect_s3(client, project["id"], s3)
        result = CliRunner().invoke(main, ["import", "-p", str(project["id"]), str(source), "--json"], env=env)
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["imported"] == 2
        tasks = {t["data"]["item_id"]: t for t in client.pages("/api/tasks", {"project": project["id"],
                                                                               "fields": "all"})}
        # Label Studio recognises the storage: it shows the image as its resolve route, which reads the
        # object through the connected storage.
        shown = tasks["s3-red"]["data"]["image"]
        route, _, query = shown.partition("?fileuri=")
        assert route == f"/tasks/{tasks['s3-red']['id']}/resolve/"
        assert base64.urlsafe_b64decode(query + "=" * (-len(query) % 4)).decode() == f"s3://{BUCKET}/shapes/red.png"
        resolved = requests.get(f"{label_studio.url}{shown}", headers={"Authorization": f"Token {label_studio.token}"},
                                timeout=30)
        assert resolved.status_code == 200 and resolved.content == png("red")

        # The backend samples candidates from those images (read through the same route).
        found = client.get(f"/api/projects/{project['id']}")
        assert predict_missing(client, found, batch_size=8).predicted == 2
        for task in client.pages("/api/tasks", {"project": project["id"], "fields": "all"}):
            assert task["data"]["candidates"], task["data"]


def test_a_bucket_without_storage_is_refused_before_anything_is_imported(label_studio):
    client = LabelStudioClient(label_studio.url, label_studio.token)
    project = init_project(client, f"gs-{time.time_ns()}", read_label_config()).project
    placer = ImagePlacer(client, project["id"])
    with pytest.raises(IllumeError, match="no gcs storage connected for bucket 'b'"):
        import_items(client, project["id"], [Item("g", "gs://b/x.png", "q?", "a")], placer)
    with pytest.raises(IllumeError, match="no azure storage connected for container 'c'"):
        placer.url("azure-blob://c/x.png")
