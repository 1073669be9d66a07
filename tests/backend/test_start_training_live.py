"""Label Studio the way its users run it, end to end with the real backend over HTTP:
renamed controls and fields give the same training rows, and "Start training" runs a round."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from backend_helpers import FAST_SAMPLING, ROUND_STAND_IN, ServerThread, colour_items
from illume.labelstudio.client import LabelStudioClient
from connector.export_project import export_project
from connector.importing import ImagePlacer, import_items
from connector.predicting import predict_missing
from connector.project import find_project, init_project, read_label_config
from connector.simulate import simulate
from illume.critic import Critic
from illume.records import Item, TrainingRow, read_jsonl
from ml_backend.app import create_app
from ml_backend.model_holder import Loaded, ModelHolder

pytestmark = pytest.mark.label_studio

RENAMED = """<View>
  <Image name="img" value="$img"/>
  <Text name="q" value="$q"/>
  <Text name="a" value="$a"/>
  <Choices name="picks" toName="img" choice="multiple" value="$opts"/>
  <View>
    <Choices name="nope" toName="img" choice="multiple"><Choice value="Nothing fits" alias="x"/></Choices>
  </View>
  <TextArea name="better" toName="img"/>
</View>"""


@pytest.fixture
def items(label_studio) -> list[Item]:
    return colour_items(Path(label_studio.data_dir) / "start-training", "item-")


def make_backend(label_studio, llava, make_settings, sampling=FAST_SAMPLING, **settings):
    settings = make_settings(sampling=sampling, admin_token="adm1n",
                             label_studio=LabelStudioClient(label_studio.url, label_studio.token), **settings)
    return ServerThread(create_app(settings, ModelHolder(Loaded(llava, "tiny-llava-v1"), device="cpu")))


def new_project(client, label_studio, title, config, items, backend_url) -> dict:
    project = init_project(client, f"{title}-{time.time_ns()}", config, backend_url=backend_url).project
    import_items(client, project["id"], items, ImagePlacer(client, project["id"], Path(label_studio.data_dir)))
    assert predict_missing(client, project, batch_size=8).predicted == len(items)
    return find_project(client, project["id"])


def rows(out: Path, aliases: dict[tuple[str, str], Any] | None = None) -> list[tuple]:
    """The export's rows; with `aliases`, each rationale named by what `aliases` says of its candidate."""
    found = [(r.item_id, r.kind, r.rationale) for r in read_jsonl(out / "rows.jsonl", TrainingRow)]
    if aliases is not None:
        found = [(item, kind, text and aliases[item, text]) for item, kind, text in found]
    return sorted(found, key=str)


class FirstUnlessBlue(Critic):
    """Ticks the first candidate, or none ("None of these is correct") when the reference says blue."""

    def tick(self, candidates, references):
        return [index == 0 and "blue" not in references[0] for index in range(len(candidates))]


def test_renamed_controls_and_fields_give_the_same_rows(label_studio, llava, make_settings, items, tmp_path):
    client = LabelStudioClient(label_studio.url, label_studio.token)
    exported = {}
    with make_backend(label_studio, llava, make_settings) as server:
        for name, config in (("shipped", read_label_config()), ("renamed", RENAMED)):
            project = new_project(client, label_studio, name, config, items, server.url)
            result = simulate(client, project, critic=FirstUnlessBlue())
            assert (result.annotations, result.ticked) == (3, 2)
            export_project(client, project, tmp_path / name)
            field, aliases = ("opts" if name == "renamed" else "candidates"), {}
            for task in client.pages("/api/tasks", {"project": project["id"], "fields": "all"}):
                aliases.update({(task["data"]["item_id"], " ".join(c["value"].split())): place
                                for place, c in enumerate(task["data"][field])})
            exported[name] = rows(tmp_path / name, aliases)
    # the candidates are sampled and shown in a per-task order, so rows are compared by where the
    # candidate was shown (the critic ticks the first one)
    assert exported["renamed"] == exported["shipped"] == [
        ("item-0", "rationale", 0), ("item-1", "answer", None), ("item-2", "rationale", 0)]


def round_trained(run_dir: Path, number: int) -> bool:
    """The run's state records round `number` trained (the step after its reload; written atomically)."""
    state = run_dir / "rounds.json"
    return state.is_file() and "train" in json.loads(state.read_text())["rounds"].get(str(number), {}).get("done", [])


def test_start_training_in_label_studio_runs_one_round(label_studio, llava, llava_dir, make_settings, items,
                                                       tmp_path, monkeypatch):
    client = LabelStudioClient(label_studio.url, label_studio.token)
    run_dir = tmp_path / "rounds"
    monkeypatch.setenv("ILLUME_TRAIN_LOG", str(tmp_path / "train.log"))
    command = (f"{sys.executable} -m connector.cli round --project {{project}} --run-dir {run_dir} "
               f"--base-model {llava_dir} --train-arg=--epochs --train-arg=1 --train-arg=--device --train-arg=cpu "
               f"--json")
    with make_backend(label_studio, llava, make_settings, train_command=command) as server:
        monkeypatch.setenv("ILLUME_BACKEND_URL", server.url)  # the round reloads this backend
        project = new_project(client, label_studio, "start-training", read_label_config(), items, server.url)
        tasks = [t["id"] for t in client.pages("/api/tasks", {"project": project["id"]})]
        annotated = sorted(tasks[:2])
        for task, seconds in zip(annotated, (12.5, 7.5)):  # two of three tasks finished; the third stays open
            candidates = client.get(f"/api/tasks/{task}")["data"]["candidates"]
            client.sdk.annotations.create(id=task, lead_time=seconds, result=[{
                "from_name": "rationales", "to_name": "image", "type": "choices",
                "value": {"choices": [candidates[0]["alias"]]}}])
        before = requests.get(f"{server.url}/health", timeout=10).json()["model_version"]
        backend = client.sdk.ml.list(project=project["id"])[0]
        client.sdk.ml.train(id=backend.id)  # what the "Start training" button sends (POST /api/ml/{id}/train)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not round_trained(run_dir, 1):
            time.sleep(1.0)  # waiting for the background round (export, training, reload)
        serving = requests.get(f"{server.url}/health", timeout=10).json()["model_version"]
        log = (tmp_path / "train.log").read_text() if (tmp_path / "train.log").is_file() else ""
        assert before != serving == "illume-round-1", log[-3000:]
    state = json.loads((run_dir / "rounds.json").read_text())
    assert state["rounds"]["1"]["tasks"] == annotated and state["trained_tasks"] == annotated
    manifest = json.loads((run_dir / "round-1" / "export" / "manifest.json").read_text())
    assert manifest["task_ids"] == annotated and manifest["counts"]["completed"] == 2
    assert state["rounds"]["1"]["promoted"] and state["serving"]["version"] == "illume-round-1"
    assert state["rounds"]["1"]["effort"] == {"annotator_seconds": 20.0, "annotations_timed": 2, "accepted_rationales": 2,
                                            "seconds_per_accepted_rationale": 10.0}  # Label Studio's lead_time


def test_start_training_answers_the_lead(label_studio, llava, make_settings, items, tmp_path, monkeypatch):
    """Label Studio's own button (POST /api/ml/<id>/train), pressed as a lead would: started as round
    N, already running since ..., nothing new to train on, started again after a new annotation.
    Label Studio shows none of the answers itself, so each is read back from GET /training."""
    client = LabelStudioClient(label_studio.url, label_studio.token)
    monkeypatch.setenv("ILLUME_TRAIN_LOG", str(tmp_path / "train.log"))
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "extensions"))
    script = tmp_path / "round.py"
    script.write_text(ROUND_STAND_IN)
    settings = make_settings(sampling=FAST_SAMPLING, train_answer_s=60, train_command=(
        f"{sys.executable} {script} {tmp_path} {{project}} 1"), label_studio=LabelStudioClient(label_studio.url, label_studio.token))
    app = create_app(settings, ModelHolder(Loaded(llava, "tiny-llava-v1"), device="cpu"))
    with ServerThread(app) as server:
        project = new_project(client, label_studio, "answers", read_label_config(), items, server.url)
        tasks = sorted(t["id"] for t in client.pages("/api/tasks", {"project": project["id"]}))

        def annotate(task: int) -> None:
            alias = client.get(f"/api/tasks/{task}")["data"]["candidates"][0]["alias"]
            client.sdk.annotations.create(id=task, result=[{"from_name": "rationales", "to_name": "image",
                                                            "type": "choices", "value": {"choices": [alias]}}])

        def press() -> dict:
            backend = client.sdk.ml.list(project=project["id"])[0]
            client.sdk.ml.train(id=backend.id)
            presses = requests.get(f"{server.url}/training", timeout=10).json()["presses"]
            return presses[-1]

        annotate(tasks[0])
        first = press()
        assert first["status"] == "started" and f"project {project['id']} started as round 1" in first["message"]
        second = press()
        assert second["status"] == "already running", second
        assert second["message"].startswith(f"Training for project {project['id']} is already running since ")
        (tmp_path / "release").touch()
        assert app.state.training_runs.wait(60)
        third = press()
        assert third["status"] == "nothing new", third
        assert third["message"].startswith(f"Nothing new to train on: project {project['id']} has had no new "
                                           "annotations since round 1")
        annotate(tasks[1])
        assert press()["status"] == "started"
        assert app.state.training_runs.wait(60)
        assert len(requests.get(f"{server.url}/training", timeout=10).json()["presses"]) == 4
