"""Exports read tasks as Label Studio writes them: a task shaped otherwise (by hand, by another tool)
is left out and reported, never turned into training text nor the end of the export; and a task
judged again replaces what it gave an earlier export (an annotation edited since counts as edited)."""
from __future__ import annotations

import copy
import json

import pytest

from connector.export import ExportOptions, convert
from illume.errors import IllumeError
from illume.labeling_schema import parse_schema, shipped_schema, shipped_text
from illume.records import PreferencePair, TrainingRow, read_jsonl
from tests.connector.test_export_convert import png_uri


def task(task_id, item, candidates, ticks, **data):
    return {"id": task_id,
            "data": {"item_id": item, "image": png_uri(), "question": "q?", "answer": "a",
                     "candidates": [{"value": c, "alias": f"c{i}"} for i, c in enumerate(candidates)], **data},
            "annotations": [{"id": task_id * 10, "completed_by": 1, "was_cancelled": False,
                             "result": [{"from_name": "rationales", "to_name": "image", "type": "choices",
                                         "value": {"choices": ticks}}]}]}


def broken(what):
    """A task with one thing shaped unlike Label Studio's tasks."""
    t = task(7, "bad", ["the ball is red", "the sky is blue"], ["c0"])
    annotation, result = t["annotations"][0], t["annotations"][0]["result"][0]
    if what == "choices as a string":
        result["value"]["choices"] = "c0"  # read loosely: the ticks "c" and "0"
    elif what == "text as a string":
        t["annotations"][0]["result"].append({"from_name": "written_rationale", "to_name": "image",
                                              "type": "textarea", "value": {"text": "because"}})
    elif what == "value as a list":
        result["value"] = ["c0"]
    elif what == "question as a list":
        t["data"]["question"] = ["what", "colour"]
    elif what == "question null":
        t["data"]["question"] = None
    elif what == "annotation without id":
        del annotation["id"]
    elif what == "annotation id as text":
        annotation["id"] = "70"
    elif what == "completed_by as a list":
        annotation["completed_by"] = [1]
    elif what == "annotation null":
        t["annotations"].append(None)
    elif what == "data as text":
        t["data"] = "q? a"
    elif what == "candidates as text":
        t["data"]["candidates"] = "the ball is red"
    elif what == "task without id":
        del t["id"]
    elif what == "task a number":
        return 5
    return t


SHAPES = ["choices as a string", "text as a string", "value as a list", "question as a list", "question null",
          "annotation without id", "annotation id as text", "completed_by as a list", "annotation null",
          "data as text", "candidates as text", "task without id", "task a number"]


@pytest.mark.parametrize("what", SHAPES)
def test_a_task_shaped_otherwise_is_left_out_and_reported_the_rest_exported(what, tmp_path):
    good = task(1, "good", ["the square is blue"], ["c0"])
    manifest = convert([broken(what), good], tmp_path / "out")
    rows = read_jsonl(tmp_path / "out" / "rows.jsonl", TrainingRow)
    assert [(r.item_id, r.rationale) for r in rows] == [("good", "the square is blue")]
    assert manifest["counts"]["completed"] == 1 and manifest["counts"]["refused_tasks"] == 1
    refused = manifest["refused_tasks"][0]
    assert refused["reason"] and "Label Studio" in refused["todo"]
    assert not any(len(r.rationale or "") == 1 or r.question in ("None", "['what', 'colour']") for r in rows)


def test_an_export_of_only_unreadable_tasks_says_why(tmp_path):
    with pytest.raises(IllumeError, match="1 left out as unreadable.*choices is not a list of texts"):
        convert([broken("choices as a string")], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_annotation_edited_after_an_export_replaces_its_rows_pairs_and_unticked(tmp_path):
    first = task(11, "item", ["the ball is red", "the sky is blue"], ["c0"])
    other = task(12, "other", ["the cube is green", "the cube is pink"], ["c1"])
    convert([first, other], tmp_path / "e1")
    edited = copy.deepcopy(first)
    edited["annotations"][0]["result"][0]["value"]["choices"] = ["c1"]  # the person changed their mind
    manifest = convert([edited], tmp_path / "e2", ExportOptions(previous=tmp_path / "e1", iteration=1))

    rows = {(r.item_id, r.rationale, r.task_id) for r in read_jsonl(tmp_path / "e2" / "rows.jsonl", TrainingRow)}
    assert rows == {("item", "the sky is blue", 11), ("other", "the cube is pink", 12)}
    unticked = {(r.item_id, r.rationale) for r in read_jsonl(tmp_path / "e2" / "unticked.jsonl", TrainingRow)}
    assert unticked == {("item", "the ball is red"), ("other", "the cube is green")}
    pairs = {(p.item_id, p.chosen, p.rejected) for p in read_jsonl(tmp_path / "e2" / "preferences.jsonl",
                                                                    PreferencePair)}
    assert pairs == {("item", "the sky is blue", "the ball is red"), ("other", "the cube is pink", "the cube is green")}
    assert manifest["counts"]["new_rationale_rows"] == 1  # the edited tick; the other task's row is carried


def test_a_task_judged_again_unchanged_gives_one_copy_of_each_row_none_new(tmp_path):
    first = task(11, "item", ["the ball is red", "the sky is blue"], ["c0"])
    convert([first], tmp_path / "e1")
    manifest = convert([first], tmp_path / "e2", ExportOptions(previous=tmp_path / "e1", iteration=1))
    lines = (tmp_path / "e2" / "rows.jsonl").read_text().splitlines()
    assert [json.loads(line)["rationale"] for line in lines] == ["the ball is red"]
    assert manifest["counts"]["new_rationale_rows"] == 0 and manifest["counts"]["pairs"] == 1


def _config(texts: str, image: str = '<Image name="image" value="$image"/>', to_name: str = "image") -> str:
    return (f'<View>{image}{texts}<Choices name="rationales" toName="{to_name}" choice="multiple" '
            'value="$candidates"/></View>')


def test_the_question_is_not_the_text_named_answer_when_it_comes_first():
    schema = parse_schema(_config('<Text name="answer" value="$answer"/><Text name="q" value="$question"/>'))
    assert (schema.question, schema.answer) == ("question", "answer")


@pytest.mark.parametrize("config, match", [
    (_config('<Text name="question" value="$question"/><Text name="answer" value="$question"/>'),
     "the question and the answer from the same task field"),
    (_config('<Text name="question" value="$question"/><Text name="answer" value="$answer"/>',
             image='<Image name="image" value="$candidates"/>'), "the image and the candidates"),
    (_config('<Text name="question" value="$round"/><Text name="answer" value="$answer"/>'),
     "the importer fills"),
    (_config('<Text name="question" value="$question"/><Text name="answer" value="$answer"/>', to_name="nowhere"),
     "which no object is named"),
    ("<View>" + "<Header value='x'/>" * 20_000 + "</View>", "characters long"),
])
def test_configs_that_would_overwrite_or_misdirect_task_fields_are_refused(config, match):
    with pytest.raises(IllumeError, match=match):
        parse_schema(config)


def test_the_shipped_config_still_parses():
    assert parse_schema(shipped_text("illume_rationales.xml")) == shipped_schema()


def test_a_task_judged_again_keeps_the_iteration_its_rows_were_first_made_in(tmp_path):
    first = task(11, "item", ["the ball is red", "the sky is blue", "the cube is pink"], ["c0"])
    convert([first], tmp_path / "e1", ExportOptions(iteration=0))
    again = copy.deepcopy(first)
    again["annotations"][0]["result"][0]["value"]["choices"] = ["c0", "c2"]  # one more tick since
    convert([again], tmp_path / "e2", ExportOptions(previous=tmp_path / "e1", iteration=1))
    rows = {(r.rationale, r.iteration) for r in read_jsonl(tmp_path / "e2" / "rows.jsonl", TrainingRow)}
    assert rows == {("the ball is red", 0), ("the cube is pink", 1)}
    unticked = {(r.rationale, r.iteration) for r in read_jsonl(tmp_path / "e2" / "unticked.jsonl", TrainingRow)}
    assert unticked == {("the sky is blue", 0)}


def test_a_text_accepted_again_in_a_later_round_keeps_its_first_row_and_place(tmp_path):
    """Round 2 shows an item again on a task of its own; a rationale accepted in both rounds is one
    row, the round-1 one, ahead of round 2's new rows: the order and the iterations the training
    reads do not change with which round accepted a text last."""
    round_1 = [task(11, "item", ["the ball is red", "the ball is round"], ["c0", "c1"]),
               task(12, "other", ["the sky is blue"], ["c0"])]
    convert(round_1, tmp_path / "e1", ExportOptions(iteration=1))
    round_2 = [task(21, "item", ["the ball is red", "the ball is big"], ["c0", "c1"])]
    manifest = convert(round_2, tmp_path / "e2", ExportOptions(previous=tmp_path / "e1", iteration=2))
    rows = [(r.rationale, r.iteration, r.task_id) for r in read_jsonl(tmp_path / "e2" / "rows.jsonl", TrainingRow)
            if r.kind == "rationale"]
    assert rows == [("the ball is red", 1, 11), ("the ball is round", 1, 11), ("the sky is blue", 1, 12),
                    ("the ball is big", 2, 21)]
    assert manifest["counts"]["new_rationale_rows"] == 1

    # task 11 judged again, now without "the ball is red": round 2's row of that text stands
    again = copy.deepcopy(round_1[0])
    again["annotations"][0]["result"][0]["value"]["choices"] = ["c1"]
    convert([again, *round_2], tmp_path / "e3", ExportOptions(previous=tmp_path / "e1", iteration=2))
    rows = [(r.rationale, r.iteration, r.task_id) for r in read_jsonl(tmp_path / "e3" / "rows.jsonl", TrainingRow)
            if r.kind == "rationale"]
    assert sorted(rows) == [("the ball is big", 2, 21), ("the ball is red", 2, 21), ("the ball is round", 1, 11),
                            ("the sky is blue", 1, 12)]


def test_aliases_are_never_given_again_once_taken_off_a_task():
    from illume.labelstudio.candidates import assign_aliases

    options = assign_aliases(["b", "d"], [{"value": "b", "alias": "c0"}], retired={"c1": "a", "c4": "c"})
    assert options == [{"value": "b", "alias": "c0"}, {"value": "d", "alias": "c5"}]
    assert assign_aliases(["c"], [], retired={"c4": "c"}) == [{"value": "c", "alias": "c4"}]  # its old alias back
