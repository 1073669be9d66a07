"""Rounds at the pace of real people, on a real Label Studio: a skipped task finishes a round's
wait instead of blocking it and never becomes training data; with overlap K a task is complete
at K annotations (status, export) unless --min-annotations says otherwise."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.export_project import export_project
from connector.loop import Loop, LoopConfig
from connector.round_step import RoundRecord
from illume.records import TrainingRow, read_jsonl

pytestmark = pytest.mark.label_studio


def waiting_loop(kit, tmp_path, **config) -> Loop:
    """A loop that waits for people on the kit's project (its round-1 tasks are the kit's tasks)."""
    items = tmp_path / "items.jsonl"
    items.write_text("")
    return Loop(kit.client, LoopConfig(project=kit.project, items=items, run_dir=tmp_path / "run", base_model="unused",
                                       simulate=False, poll_seconds=0.1, **config), say=lambda line: None)


def rows(out) -> list[tuple[str, str | None]]:
    return sorted((r.item_id, r.rationale) for r in read_jsonl(out / "rows.jsonl", TrainingRow))


def test_a_skipped_task_finishes_the_wait_and_is_never_training_data(illume_project, tmp_path):
    kit = illume_project
    ticked = kit.add_task("ticked", ["the ball is red", "a cat"])
    skipped = kit.add_task("skipped", ["the sky is green", "a dog"])
    kit.annotate(ticked, ["c0"], user="ann")

    record = RoundRecord(1)
    waiting_loop(kit, tmp_path, wait_hours=0)._annotate(1, record)  # nobody touched "skipped": the wait runs out
    assert record.waiting == {"tasks": 2, "finished": 1, "complete": 1, "skipped": 0, "required_annotations": 1,
                                 "timed_out": True}

    kit.annotate(skipped, ["c0"], user="ann", cancelled=True)  # Label Studio's "Skip" (was_cancelled)
    record = RoundRecord(1)
    waiting_loop(kit, tmp_path)._annotate(1, record)  # a day's wait: returns because both are finished
    assert record.waiting["timed_out"] is False
    assert (record.waiting["finished"], record.waiting["complete"], record.skipped_tasks) == (2, 1, 1)

    manifest = export_project(kit.client, kit.project, tmp_path / "export")
    assert rows(tmp_path / "export") == [("ticked", "the ball is red")]  # the skip's tick is not a row
    assert manifest["task_ids"] == [ticked]
    assert manifest["counts"]["cancelled_annotations"] == 1 and manifest["counts"]["completed"] == 1


def test_with_overlap_two_a_skip_waits_for_the_others_and_one_vote_is_not_complete(illume_project, sync_client,
                                                                                   label_studio, tmp_path):
    kit = illume_project
    sync_client.patch(f"/api/projects/{kit.id}", {"maximum_annotations": 2})
    kit.project["maximum_annotations"] = 2
    both = kit.add_task("both", ["the ball is red", "a cat"])
    one = kit.add_task("one", ["the sky is blue", "a dog"])
    kit.annotate(both, ["c0"], user="ann")
    kit.annotate(both, ["c0", "c1"], user="bob")
    kit.annotate(one, ["c0"], user="ann")
    kit.annotate(one, user="bob", cancelled=True)

    # Each of the two people it was offered to answered: finished, but with one vote it is not complete.
    record = RoundRecord(1)
    waiting_loop(kit, tmp_path)._annotate(1, record)
    assert (record.waiting["finished"], record.waiting["complete"], record.skipped_tasks) == (2, 1, 1)
    assert record.waiting["required_annotations"] == 2

    status = CliRunner().invoke(main, ["status", "--url", label_studio.url, "--api-key", label_studio.token,
                                       "--project", str(kit.id), "--json"])
    assert status.exit_code == 0, status.output
    report = json.loads(status.output)
    assert (report["completed"], report["below_min_annotations"], report["open"]) == (1, 1, 1)

    manifest = export_project(kit.client, kit.project, tmp_path / "export")
    assert manifest["task_ids"] == [both]  # one vote is not trained on; it waits for a later round
    assert (manifest["counts"]["below_min_annotations"], manifest["counts"]["min_annotations"]) == (1, 2)
    assert rows(tmp_path / "export") == [("both", "the ball is red")]  # majority of two: both ticked c0

    lenient = export_project(kit.client, kit.project, tmp_path / "lenient", min_annotations=1)
    assert lenient["task_ids"] == sorted([both, one]) and lenient["counts"]["below_min_annotations"] == 0
    assert ("one", "the sky is blue") in rows(tmp_path / "lenient")


def test_a_skip_settles_nothing_when_skipped_tasks_come_back_to_the_same_person(illume_project, sync_client, tmp_path):
    kit = illume_project
    sync_client.patch(f"/api/projects/{kit.id}", {"skip_queue": "REQUEUE_FOR_ME"})
    task = kit.add_task("again", ["the ball is red"])
    kit.annotate(task, ["c0"], user="ann", cancelled=True)
    record = RoundRecord(1)
    waiting_loop(kit, tmp_path, wait_hours=0)._annotate(1, record)
    assert (record.waiting["finished"], record.waiting["timed_out"], record.skipped_tasks) == (0, True, 1)
