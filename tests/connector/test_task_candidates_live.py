"""The task contract (illume.labelstudio.candidates) against a real Label Studio: options of a judged
task are append-only, also when the annotation arrives between our read and our write; options are
stored in a per-task order; a request for new candidates appends them."""
from __future__ import annotations

import pytest

from illume.labeling_schema import shipped_schema
from illume.records import Candidate
from illume.labelstudio.candidates import (APPENDED, RESAMPLE, RETIRED, display_order, order_key, request_resample,
                                           stored_tasks, unseen_aliases, write_candidates)

pytestmark = pytest.mark.label_studio


def candidates(*texts: str) -> list[Candidate]:
    return [Candidate(text, -1.0 - n, 1.0) for n, text in enumerate(texts)]


def stored_options(kit, task: int) -> list[dict]:
    return stored_tasks(kit.client, kit.id, [task])[task].data["candidates"]


def test_options_are_replaced_until_judged_then_appended(illume_project):
    kit, fields = illume_project, shipped_schema()
    task = kit.add_task("item-a", [])
    read = stored_tasks(kit.client, kit.id, [task])[task]
    assert not read.judged and read.data["item_id"] == "item-a"
    write_candidates(kit.client, task, read, fields, candidates("the square is red.", "it is a box."))
    write_candidates(kit.client, task, stored_tasks(kit.client, kit.id, [task])[task], fields,
                     candidates("It is a box", "a new text."))
    replaced = [{"value": "It is a box", "alias": "c1"}, {"value": "a new text.", "alias": "c2"}]
    assert stored_options(kit, task) == display_order(replaced, order_key(task))  # the task's own order
    shown = stored_options(kit, task)

    annotation = kit.annotate(task, ["c2"])
    judged = stored_tasks(kit.client, kit.id, [task])[task]
    assert judged.judged and judged.newest_annotation == annotation
    current = write_candidates(kit.client, task, judged, fields, candidates("third one.", "a new text"))
    assert current == [{"value": "third one.", "alias": "c3"}, {"value": "a new text.", "alias": "c2"}]
    kept = [o for o in shown if o["alias"] != "c2"]  # c2 is offered again: among the current ones
    assert stored_options(kit, task) == display_order(current, order_key(task)) + kept  # current first
    after = stored_tasks(kit.client, kit.id, [task])[task]
    assert after.data["item_id"] == "item-a"  # nothing else changed
    assert after.meta == {"references": [], APPENDED: {"c3": annotation},  # c3 came after that annotation
                          RETIRED: {"c0": "the square is red."}}  # taken off before anyone judged the task
    assert unseen_aliases({"meta": after.meta}, {"id": annotation}) == {"c3"}
    assert unseen_aliases({"meta": after.meta}, {"id": annotation + 1}) == set()


def test_an_annotation_saved_between_read_and_write_keeps_its_option(illume_project):
    kit, fields = illume_project, shipped_schema()
    task = kit.add_task("item-b", ["the square is red.", "it is a box."])
    before = stored_tasks(kit.client, kit.id, [task])[task]  # read while nobody has judged it
    annotation = kit.annotate(task, ["c0"])  # an annotator saves meanwhile
    write_candidates(kit.client, task, before, fields, candidates("another text."))
    assert stored_options(kit, task) == [{"value": "another text.", "alias": "c2"},  # the current one first,
                                         {"value": "the square is red.", "alias": "c0"},  # then what it saw
                                         {"value": "it is a box.", "alias": "c1"}]
    assert stored_tasks(kit.client, kit.id, [task])[task].meta[APPENDED] == {"c2": annotation}


def test_a_draft_makes_a_task_judged(illume_project):
    kit = illume_project
    task = kit.add_task("item-c", ["the square is red."])
    kit.client.post(f"/api/tasks/{task}/drafts", {"result": [], "lead_time": 1.0})
    assert stored_tasks(kit.client, kit.id, [task])[task].judged


def test_a_request_for_new_candidates_appends_them_and_is_cleared(illume_project):
    kit, fields = illume_project, shipped_schema()
    task = kit.add_task("item-d", ["the square is red.", "it is a box."])
    request_resample(kit.client, task, stored_tasks(kit.client, kit.id, [task])[task])
    asked = stored_tasks(kit.client, kit.id, [task])[task]
    assert asked.resample_requested and not asked.judged and asked.data["item_id"] == "item-d"
    current = write_candidates(kit.client, task, asked, fields, candidates("It is a box", "brand new."))
    assert current == [{"value": "it is a box.", "alias": "c1"}, {"value": "brand new.", "alias": "c2"}]
    assert stored_options(kit, task) == display_order(current, order_key(task)) + [
        {"value": "the square is red.", "alias": "c0"}]  # the fresh sample first; kept, nothing twice
    after = stored_tasks(kit.client, kit.id, [task])[task]
    assert not after.resample_requested and RESAMPLE not in after.meta and APPENDED not in after.meta


def exported_task(kit, task: int) -> dict:
    response = kit.client.request("GET", f"/api/projects/{kit.id}/export",
                                  params={"exportType": "JSON", "download_all_tasks": "true", "ids[]": [str(task)]})
    return response.json()[0]


def test_a_tick_on_a_page_opened_before_a_rewrite_keeps_its_text(illume_project):
    """Carol's page shows c0/c1; a new version's write takes c1 off the (still unjudged) task; she
    submits c1; the next write adds a text. c1 must still mean what she saw, never the new text."""
    from connector.judging import judge_task

    kit, fields = illume_project, shipped_schema()
    task = kit.add_task("stale-page", ["the square is red.", "it is a box."])
    page = {o["alias"]: o["value"] for o in stored_options(kit, task)}
    write_candidates(kit.client, task, stored_tasks(kit.client, kit.id, [task])[task], fields,
                     candidates("the square is red."))
    kit.annotate(task, ["c1"], user="carol")
    write_candidates(kit.client, task, stored_tasks(kit.client, kit.id, [task])[task], fields,
                     candidates("the square is red.", "a completely different text."))
    now = {o["alias"]: o["value"] for o in stored_options(kit, task)}
    assert now.get("c1") in (None, page["c1"]) and "c1" not in {a for a, t in now.items() if t != page["c1"]}
    judged = judge_task(exported_task(kit, task), fields)
    assert judged.feedback.accepted == ["it is a box."]
    assert "a completely different text." not in judged.feedback.candidates  # appended after her: unseen
    assert judged.feedback.rejected == ["the square is red."]


def test_an_annotation_between_read_and_write_keeps_its_rejections(illume_project):
    """Dave saw c0/c1 and ticked c1 between our read and our write (which dropped c1): what he saw
    is restored, and c0, which he saw and left, still counts as his rejection."""
    from connector.judging import judge_task

    kit, fields = illume_project, shipped_schema()
    task = kit.add_task("between", ["the square is red.", "it is a box."])
    before = stored_tasks(kit.client, kit.id, [task])[task]
    kit.annotate(task, ["c1"], user="dave")
    write_candidates(kit.client, task, before, fields, candidates("the square is red.", "new text."))
    after = stored_tasks(kit.client, kit.id, [task])[task]
    assert set(after.meta.get(APPENDED) or {}) == {"c2"}  # only the text new to him
    judged = judge_task(exported_task(kit, task), fields)
    assert judged.feedback.accepted == ["it is a box."] and judged.feedback.rejected == ["the square is red."]
