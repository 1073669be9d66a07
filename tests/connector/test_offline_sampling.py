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
