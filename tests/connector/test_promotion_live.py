"""Promotion as people meet it, with a real Label Studio, the real backend in its own process
(its own working directory) and a real training job on a tiny model:

* `loop --run-dir runs/loop` (relative, the README's example) promotes: the backend is handed
  absolute paths, not paths relative to the loop's directory;
* after a promotion, `round` moves the project to the new model version and gives the open tasks
  its candidates, while annotated tasks keep theirs; a task with fewer votes than the overlap
  is not trained on and stays for the next round.
No held-out items: the gate admits every adapter, so promotion does not hang on a random model.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from PIL import Image

from connector.cli import main
from connector.demo import ml_backend
from connector.export_project import export_project
from connector.importing import ImagePlacer, import_items
from connector.labeling_round import RoundConfig, run_round
from connector.predicting import predict_missing
from connector.project import find_project, init_project, read_label_config
from connector.promotion import Backend
from connector.round_step import TrainingSettings
from illume.records import Item, write_jsonl

pytestmark = [pytest.mark.label_studio, pytest.mark.slow]

ADMIN = "adm1n"
TRAIN_ARGS = ("--epochs", "1", "--batch-size", "4")


def colour_items(folder: Path) -> list[Item]:
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for index, color in enumerate(["red", "blue", "green"]):
        Image.new("RGB", (32, 32), color).save(folder / f"{index}.png")
        items.append(Item(f"{folder.name}-{index}", str(folder / f"{index}.png"), "what color is it ?", color,
                          [f"the picture is {color}."]))
    return items


@pytest.fixture
def backend(label_studio, tiny_model_dir, tmp_path):
    """The backend as `illume-backend` runs it, started from the repository (not the test's directory)."""
    model = tiny_model_dir("llava")
    with ml_backend(model, None, None, label_studio, ADMIN, Path(label_studio.data_dir), tmp_path / "backend.log") as url:
        yield url, str(model)


def health_version(url: str) -> str:
    return requests.get(f"{url}/health", timeout=10).json()["model_version"]


def test_loop_with_a_relative_run_dir_promotes(label_studio, sync_client, backend, tmp_path, monkeypatch):
    url, model = backend
    project = init_project(sync_client, f"relative-{tmp_path.name}", read_label_config(), backend_url=url).project
    items = tmp_path / "items.jsonl"
    write_jsonl(items, colour_items(Path(label_studio.data_dir) / f"relative-{tmp_path.name}"))
    monkeypatch.chdir(tmp_path)  # the loop's directory is not the backend's
    result = CliRunner().invoke(main, [
        "loop", "--url", label_studio.url, "--api-key", label_studio.token, "--project", str(project["id"]),
        "--items", str(items), "--base-model", model, "--run-dir", "runs/loop", "--rounds", "1",
        "--local-files-root", str(label_studio.data_dir), "--backend-url", url, "--admin-token", ADMIN,
        *[f"--train-arg={arg}" for arg in TRAIN_ARGS], "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "runs/loop/rounds.json").read_text())["rounds"]["1"]
    assert record["promoted"] and Path(record["adapter"]).is_absolute()
    assert Path(record["adapter"]).is_relative_to(tmp_path.resolve())
    assert health_version(url) == "illume-round-1"  # the backend loaded it: the reload was not refused
    shown = CliRunner().invoke(main, ["report", "--run-dir", "runs/loop"])  # a run made by `loop`
    assert shown.exit_code == 0, shown.output
    assert "illume-round-1" in Path(shown.output.strip().splitlines()[-1]).read_text()


def test_round_moves_the_project_to_the_promoted_version_and_refreshes_open_tasks(
        label_studio, sync_client, backend, tmp_path):
    url, model = backend
    first = health_version(url)
    project = init_project(sync_client, f"refresh-{tmp_path.name}", read_label_config(), overlap=2,
                           backend_url=url).project
    placer = ImagePlacer(sync_client, project["id"], Path(label_studio.data_dir))
    import_items(sync_client, project["id"], colour_items(Path(label_studio.data_dir) / f"refresh-{tmp_path.name}"),
                 placer)
    assert predict_missing(sync_client, project, batch_size=8).predicted == 3
    tasks = {t["data"]["item_id"]: t["id"] for t in sync_client.pages("/api/tasks", {"project": project["id"]})}
    both, one, open_ = (tasks[f"refresh-{tmp_path.name}-{k}"] for k in range(3))
    users = [sync_client.post("/api/users/", {"email": f"{name}-{tmp_path.name}@illume.test",
                                              "username": f"{name}-{tmp_path.name}"})["id"] for name in ("ann", "bob")]
    tick = [{"from_name": "rationales", "to_name": "image", "type": "choices", "value": {"choices": ["c0"]}}]
    for task, people in ((both, users), (one, users[:1])):
        for user in people:
            sync_client.post(f"/api/tasks/{task}/annotations", {"result": tick, "completed_by": user})

    lines: list[str] = []
    record = run_round(sync_client, RoundConfig(project=find_project(sync_client, project["id"]),
                                                run_dir=tmp_path / "rounds", base_model=model,
                                                backend=Backend(url, ADMIN),
                                                training=TrainingSettings(train_args=TRAIN_ARGS)), say=lines.append)
    assert record["tasks"] == [both] and record["waiting_for_annotations"] == 1  # one vote of two: not yet
    assert record["promoted"] and record["serving_version"] == "illume-round-1" != first
    assert record["refreshed"] == {"version": "illume-round-1", "tasks": 1, "requested": 1}

    assert sync_client.get(f"/api/projects/{project['id']}")["model_version"] == "illume-round-1"
    shown = CliRunner().invoke(main, ["report", "--run-dir", str(tmp_path / "rounds")])  # a run made by `round`
    assert shown.exit_code == 0, shown.output
    page = Path(shown.output.strip().splitlines()[-1]).read_text()
    assert "illume-round-1" in page and "Round 1: examples" in page and "Annotation effort" in page

    def versions(task: int) -> set[str]:
        return {p["model_version"] for p in sync_client.get("/api/predictions", params={"task": task})}

    assert "illume-round-1" in versions(open_)  # the open task: the new model's candidates
    assert versions(one) == versions(both) == {first}  # annotated tasks keep what they judged

    # The task with one vote is what the next round exports once it has its second.
    sync_client.post(f"/api/tasks/{one}/annotations", {"result": tick, "completed_by": users[1]})
    later = export_project(sync_client, find_project(sync_client, project["id"]), tmp_path / "next",
                           exclude_tasks=frozenset(record["tasks"]))
    assert later["task_ids"] == [one]
