"""`illume-sync predict --offline`: two processes under the deepspeed launcher against a real Label
Studio and a real backend; a run killed after its first write is completed by the next, once."""
from __future__ import annotations

import dataclasses
import json
from collections import Counter

import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.offline_sampling import (
    FAULT_ENV,
    OfflineJob,
    run_offline,
    shard,
)
from connector.predicting import project_predictions
from connector.project import init_project, read_label_config
from illume.errors import IllumeError
from illume.options import env_values
from illume.sampling import PRODUCT_SAMPLING, SamplingConfig
from illume.labelstudio.client import LabelStudioClient
from ml_backend.app import create_app
from ml_backend.settings import Settings
from illume.ports import free_port
from tests.backend.backend_helpers import ServerThread

TASKS = 8


def test_shards_split_any_listing_the_same_way():
    listing = [3, 4, 7, 10, 11, 12]
    assert shard(listing, 0, 2) == [4, 10, 12] and shard(listing, 1, 2) == [3, 7, 11]
    assert shard([4, 10, 11], 1, 2) == [11]  # a later, shorter listing never moves a task to another process


def test_sampling_settings_come_from_the_backends_variables():
    assert env_values(SamplingConfig, {"ILLUME_TEMPERATURES": "0.5,1", "ILLUME_MAX_NEW_TOKENS": "12"}) == {
        "temperatures": (0.5, 1.0), "max_new_tokens": 12}
    with pytest.raises(IllumeError, match="ILLUME_SEED"):
        env_values(SamplingConfig, {"ILLUME_SEED": "x"})


@pytest.mark.label_studio
def test_offline_sampling_under_the_launcher_is_resumable_and_writes_each_task_once(
        illume_project, label_studio, sync_client, tiny_model_dir, monkeypatch):
    model = str(tiny_model_dir("llava"))
    tasks = [illume_project.add_task(f"item{i}", [], color=("red", "blue")[i % 2]) for i in range(TASKS)]
    settings = Settings(model=model, label_studio=LabelStudioClient(label_studio.url, label_studio.token))
    app = create_app(settings)
    with ServerThread(app) as backend:
        project = init_project(sync_client, illume_project.project["title"], read_label_config(),
                               backend_url=backend.url).project
        served = app.state.holder.version
        job = OfflineJob(url=label_studio.url, project=project["id"], model=model,
                         sampling=dataclasses.replace(PRODUCT_SAMPLING, max_new_tokens=12))

        monkeypatch.setenv(FAULT_ENV, "kill-after-first-write")  # rank 0 dies right after its first prediction
        with pytest.raises(IllumeError, match="offline sampling failed"):
            run_offline(sync_client, project, job, processes=2, master_port=free_port())
        monkeypatch.delenv(FAULT_ENV)
        monkeypatch.setenv("ILLUME_MAX_NEW_TOKENS", "12")  # the CLI reads the backend's sampling variables
        first = Counter(p["task"] for p in project_predictions(sync_client, project["id"]).values())
        assert 1 <= len(first) < TASKS and set(first.values()) == {1}

        result = CliRunner().invoke(main, ["predict", "--url", label_studio.url, "--api-key", label_studio.token,
                                           "--project", str(project["id"]), "--offline", "--model", model,
                                           "--processes", "2", "--batch-size", "4", "--json"])
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout[result.stdout.index("{"):])
        assert summary["version"] == served and summary["requested"] == summary["predicted"] == TASKS - len(first)

    predictions = list(project_predictions(sync_client, project["id"]).values())
    assert sorted(p["task"] for p in predictions) == sorted(tasks)  # every task exactly once
    assert {p["model_version"] for p in predictions} == {served}
    assert all(p["result"] == [] for p in predictions)  # the backend's default pre-tick policy: none
    stored = {t["id"]: t["data"] for t in sync_client.pages("/api/tasks", {"project": project["id"]})}
    assert all(stored[t]["candidates"] and all(o["alias"].startswith("c") for o in stored[t]["candidates"])
               for t in tasks)


def test_a_write_after_sampling_keeps_what_another_writer_stored_meanwhile(
        illume_project, label_studio, tiny_model_dir, monkeypatch):
    """While this shard samples, another writer (the backend) offers X on the task and a person
    ticks it: the shard's write must start from the task as it is then, so X keeps its alias."""
    from connector import project as project_module
    from connector.offline_sampling import KEY_ENV, run_shard
    from illume.labeling_schema import shipped_schema
    from illume.labelstudio.candidates import stored_tasks, write_candidates
    from illume.records import Candidate
    from illume.vlm import VLM

    kit = illume_project
    task = kit.add_task("busy", ["the square is red.", "it is a box."])
    real_sample = VLM.sample

    def sample(self, queries, sampling):
        found = real_sample(self, queries, sampling)
        stored = stored_tasks(kit.client, kit.id, [task])[task]
        write_candidates(kit.client, task, stored, shipped_schema(), [Candidate("another writer's text.", -1.0, 1.0)])
        kit.annotate(task, ["c2"], user="erin")
        return found

    monkeypatch.setattr(VLM, "sample", sample)
    monkeypatch.setattr(project_module, "served_model_version", lambda client, project: "")
    monkeypatch.setenv(KEY_ENV, label_studio.token)
    job = OfflineJob(url=label_studio.url, project=kit.id, model=str(tiny_model_dir("llava")),
                     sampling=dataclasses.replace(PRODUCT_SAMPLING, max_new_tokens=8))
    assert run_shard(job, 0, 1)["predicted"] == 1
    options = {o["alias"]: o["value"] for o in stored_tasks(kit.client, kit.id, [task])[task].data["candidates"]}
    assert options["c2"] == "another writer's text."  # erin's tick still means what she saw
