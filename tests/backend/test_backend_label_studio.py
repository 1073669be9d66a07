"""Against a real Label Studio: tasks get candidates in their data and a prediction of our version."""
from __future__ import annotations

import shutil

import pytest
import requests

from backend_helpers import LABEL_CONFIG, ServerThread, data_uri, png_bytes
from illume.images import ImagePolicy
from ml_backend.app import create_app
from ml_backend.model_holder import Loaded, ModelHolder

pytestmark = pytest.mark.label_studio

QUESTION, ANSWER = "what color is the shape ?", "red"


def make_tasks(label_studio, ls_client, project_id: int) -> list[int]:
    """Three tasks, one per image source Label Studio offers: upload, local files, data: URI."""
    # Label Studio uploads image files only into projects whose config has one data key:
    # upload with an image-only config, then switch to ours.
    ls_client.projects.update(id=project_id, label_config='<View><Image name="image" value="$image"/></View>')
    headers = {"Authorization": f"Token {label_studio.token}"}
    upload = requests.post(f"{label_studio.url}/api/projects/{project_id}/import", headers=headers,
                           files={"file": ("red.png", png_bytes("red"), "image/png")}, timeout=60)
    upload.raise_for_status()
    ls_client.projects.update(id=project_id, label_config=LABEL_CONFIG)

    images = label_studio.data_dir / "illume-images"
    images.mkdir(exist_ok=True)
    (images / "blue.png").write_bytes(png_bytes("blue"))
    ls_client.import_storage.local.create(project=project_id, path=str(images), title="images",
                                          use_blob_urls=True)
    ls_client.projects.import_tasks(id=project_id, request=[
        {"image": "/data/local-files/?d=illume-images/blue.png", "question": QUESTION, "answer": "blue",
         "explanation": "the reference explanation, never shown", "candidates": []},
        {"image": data_uri("green"), "question": QUESTION, "answer": "green", "candidates": []},
    ])
    task_ids = [t.id for t in ls_client.tasks.list(project=project_id)]
    for t in ls_client.tasks.list(project=project_id):
        if "question" not in t.data:  # the uploaded image: add its question and answer
            ls_client.tasks.update(id=str(t.id), data={**t.data, "question": QUESTION, "answer": ANSWER,
                                                            "candidates": []})
    return sorted(task_ids)


@pytest.fixture
def project(ls_client):
    project = ls_client.projects.create(title="illume backend test", label_config=LABEL_CONFIG)
    yield project
    ls_client.projects.delete(id=project.id)


@pytest.fixture
def backend(label_studio, llava, make_settings):
    settings = make_settings(basic_auth=("studio", "s3cret"), preselect=2,
                             images=ImagePolicy(label_studio_url=label_studio.url,
                                                label_studio_api_key=label_studio.token))
    app = create_app(settings, ModelHolder(Loaded(llava, "tiny-llava-v1"), device="cpu"))
    with ServerThread(app) as server:
        yield server


def test_retrieve_predictions_writes_candidates_and_predictions(label_studio, ls_client, project, backend):
    task_ids = make_tasks(label_studio, ls_client, project.id)
    assert len(task_ids) == 3
    ml = ls_client.ml.create(project=project.id, url=backend.url, title="illume", auth_method="BASIC_AUTH",
                             basic_auth_user="studio", basic_auth_pass="s3cret", is_interactive=False)
    assert ml.state in ("CO", "CONNECTED", None) or ml.state  # Label Studio called /setup
    ls_client.actions.create(id="retrieve_tasks_predictions", project=project.id,
                             selected_items={"all": True, "excluded": []})

    for task_id in task_ids:
        stored = ls_client.tasks.get(id=str(task_id))
        candidates = stored.data.get("candidates")
        assert isinstance(candidates, list) and candidates, f"task {task_id} has no candidates in its data"
        aliases = [c["alias"] for c in candidates]
        assert aliases == [f"c{i}" for i in range(len(candidates))]
        assert all(isinstance(c["value"], str) and c["value"] for c in candidates)
        predictions = ls_client.predictions.list(task=task_id)
        assert len(predictions) == 1
        prediction = predictions[0]
        assert prediction.model_version == "tiny-llava-v1"
        (result,) = prediction.result
        assert result["from_name"] == "rationales" and result["type"] == "choices"
        assert set(result["value"]["choices"]) <= set(aliases) and result["value"]["choices"]
    data = {t: ls_client.tasks.get(id=str(t)).data for t in task_ids}
    assert any(d["image"].startswith("/data/upload/") for d in data.values())
    assert any(d.get("explanation") == "the reference explanation, never shown" for d in data.values())
