"""Against a real Label Studio: tasks get candidates in their data and a prediction of our version."""
from __future__ import annotations


import pytest
import requests

from backend_helpers import LABEL_CONFIG, ServerThread, data_uri, png_bytes
from illume.labelstudio.client import LabelStudioClient
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


@pytest.fixture(scope="session")
def personal_access_token(label_studio) -> str:
    """A personal access token (a JWT refresh token) made through Label Studio's API."""
    response = requests.post(f"{label_studio.url}/api/token/", timeout=30,
                             headers={"Authorization": f"Token {label_studio.token}"})
    if response.status_code == 409:  # Label Studio gives a user one token, and shows it only once
        pytest.skip("the admin user already has a personal access token (made outside this test session)")
    response.raise_for_status()
    return response.json()["token"]


@pytest.fixture(params=["legacy-token", "personal-access-token"])
def backend(request, label_studio, llava, make_settings):
    if request.param == "legacy-token":
        key = label_studio.token
    else:
        key = request.getfixturevalue("personal_access_token")
    settings = make_settings(basic_auth=("studio", "s3cret"), preselect=2,
                             label_studio=LabelStudioClient(label_studio.url, key))
    app = create_app(settings, ModelHolder(Loaded(llava, "tiny-llava-v1"), device="cpu"))
    assert settings.label_studio.is_personal_token == (request.param == "personal-access-token")
    with ServerThread(app) as server:
        server.app = app
        yield server


def predictions_by_task(ls_client, task_ids):
    return {task_id: ls_client.predictions.list(task=task_id) for task_id in task_ids}


def test_retrieve_predictions_writes_candidates_and_predictions(label_studio, ls_client, project, backend,
                                                                llava_dir):
    task_ids = make_tasks(label_studio, ls_client, project.id)
    assert len(task_ids) == 3
    ml = ls_client.ml.create(project=project.id, url=backend.url, title="illume", auth_method="BASIC_AUTH",
                             basic_auth_user="studio", basic_auth_pass="s3cret", is_interactive=False)
    ls_client.actions.create(id="retrieve_tasks_predictions", project=project.id,
                             selected_items={"all": True, "excluded": []})

    tasks = {t.id: t for t in ls_client.tasks.list(project=project.id)}
    predictions = predictions_by_task(ls_client, task_ids)
    for task_id in task_ids:
        candidates = tasks[task_id].data.get("candidates")
        assert isinstance(candidates, list) and candidates, f"task {task_id} has no candidates in its data"
        aliases = [c["alias"] for c in candidates]
        assert sorted(aliases, key=lambda a: int(a[1:])) == [f"c{i}" for i in range(len(candidates))]  # shown shuffled
        assert all(isinstance(c["value"], str) and c["value"] for c in candidates)
        assert len(predictions[task_id]) == 1
        prediction = predictions[task_id][0]
        assert prediction.model_version == "tiny-llava-v1"
        (result,) = prediction.result
        assert result["from_name"] == "rationales" and result["type"] == "choices"
        assert result["value"]["choices"] and set(result["value"]["choices"]) <= set(aliases)
    data = [t.data for t in tasks.values()]
    assert any(d["image"].startswith("/data/upload/") for d in data)  # the rest of the data is untouched
    assert any(d.get("explanation") == "the reference explanation, never shown" for d in data)

    if backend.app.state.settings.label_studio.is_personal_token:
        return  # the reload round below runs once
    holder = backend.app.state.holder
    holder.start_reload(str(llava_dir), None, "tiny-llava-v2")
    assert holder.wait_reload(120).state == "ready"
    assert ls_client.ml.get(id=ml.id) is not None
    ls_client.actions.create(id="retrieve_tasks_predictions", project=project.id,
                             selected_items={"all": True, "excluded": []})
    predictions = predictions_by_task(ls_client, task_ids)
    after = {t.id: t for t in ls_client.tasks.list(project=project.id)}
    for task_id in task_ids:
        assert sorted(p.model_version for p in predictions[task_id]) == ["tiny-llava-v1", "tiny-llava-v2"]
        before_alias = {c["value"]: c["alias"] for c in tasks[task_id].data["candidates"]}
        for option in after[task_id].data["candidates"]:  # a text keeps its alias across rounds
            assert before_alias.get(option["value"], option["alias"]) == option["alias"]
