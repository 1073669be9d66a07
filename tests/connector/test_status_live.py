"""`illume-sync status` on a real Label Studio whose export lists predictions as ids."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from connector.cli import main

pytestmark = pytest.mark.label_studio


def test_status_counts_versions_acceptance_and_preticks(illume_project, label_studio):
    kit = illume_project
    first = kit.add_task("a", ["kept pre-tick", "other"])
    second = kit.add_task("b", ["unticked pre-tick", "other"])
    kit.add_task("c", ["not annotated"])
    kit.predict(second, ["c0"], version="v1")
    kit.annotate(first, ["c0"], from_prediction=kit.predict(first, ["c0"], version="v2"))
    kit.annotate(second, none=True, from_prediction=kit.predict(second, ["c0"], version="v2"))
    export = kit.client.get(f"/api/projects/{kit.id}/export", params={"exportType": "JSON"})
    assert all(isinstance(p, int) for task in export for p in task["predictions"])  # what status must read

    result = CliRunner().invoke(main, ["status", "--url", label_studio.url, "--api-key", label_studio.token,
                                       "--project", str(kit.id), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["tasks"], report["completed"], report["open"]) == (3, 2, 1)
    assert report["tasks_by_model_version"] == {"v1": 1, "v2": 2}
    assert report["acceptance_rate"] == 0.25  # 1 of 4 candidates shown
    assert report["preticks"]["accepted_preticked_unchanged"] == 1 and report["preticks"]["preticked"] == 2
    assert report["none_with_ticks"] == 0 and report["project_model_version"] == "v2"
    quality = report["annotator_quality"]
    assert quality["gold_tasks"] == 0 and [f["tasks"] for f in quality["annotators"].values()] == [2]
    assert next(iter(quality["annotators"].values()))["name"] == label_studio.username  # the token's user
    text = CliRunner().invoke(main, ["status", "--url", label_studio.url, "--api-key", label_studio.token,
                                     "--project", str(kit.id)])
    assert text.exit_code == 0 and "annotators (0 gold tasks judged" in text.output
    assert label_studio.username in text.output.split("annotators (")[1]  # the table


def test_a_task_shaped_otherwise_is_counted_and_named_not_a_traceback(illume_project, label_studio):
    """An annotation another tool wrote with its choices as a bare text, not a list: `export` leaves
    the task out, and `status` reports on the rest and names it (it stopped with an error before)."""
    kit = illume_project
    good = kit.add_task("fine", ["it is red."])
    kit.annotate(good, ["c0"])
    odd = kit.add_task("odd", ["it is red."])
    kit.client.post(f"/api/tasks/{odd}/annotations/", {"result": [
        {"from_name": "rationales", "to_name": "image", "type": "choices", "value": {"choices": "c0"}}]})

    result = CliRunner().invoke(main, ["status", "--url", label_studio.url, "--api-key", label_studio.token,
                                       "--project", str(kit.id), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["tasks"], report["completed"], report["refused_tasks"]) == (2, 1, 1)
    [refused] = report["refused_tasks_first"]
    assert refused["task"] == odd and refused["reason"].startswith(f"task {odd}, annotation 1: ")
    assert "Fix the task in Label Studio" in report["refused_tasks_todo"]
    assert report["acceptance_rate"] == 1.0  # the good task's one candidate, ticked
