"""Per-annotator quality on hand-made exported tasks: gold agreement, the others' majority, who is
left out, the gold rule and the per-annotator error rates of the simulated crowd."""
from __future__ import annotations

import pytest

from connector.annotator_quality import AnnotatorQuality, QualitySettings, annotator_table, format_table
from connector.export_project import LeavingOut
from connector.gold import GOLD, GOLD_SHARE, gold_meta, is_gold_item
from connector.simulate import error_rates, task_crowd
from illume.errors import IllumeError
from illume.labeling_schema import shipped_schema

TRUE, FALSE = "the ball is red", "a blue cube stands there"


def task(task_id: int, votes: dict[int, list[str]], gold: bool = False, cancelled: tuple[int, ...] = ()) -> dict:
    """A task with candidates c0 (what the reference says) and c1 (not), and one annotation per voter."""
    annotations = [{"id": 100 * task_id + n, "completed_by": who, "was_cancelled": False,
                    "result": [{"from_name": "rationales", "to_name": "image", "type": "choices",
                                "value": {"choices": ticks}}] if ticks else []}
                   for n, (who, ticks) in enumerate(votes.items())]
    annotations += [{"id": 100 * task_id + 50 + n, "completed_by": who, "was_cancelled": True, "result": []}
                    for n, who in enumerate(cancelled)]
    return {"id": task_id, "data": {"image": "/data/x.png", "question": "what color is the ball?", "answer": "red",
                                    "item_id": f"item-{task_id}",
                                    "candidates": [{"value": TRUE, "alias": "c0"}, {"value": FALSE, "alias": "c1"}]},
            "meta": {"references": [TRUE], **({GOLD: True} if gold else {})}, "annotations": annotations}


def quality(min_decisions: int = 1) -> AnnotatorQuality:
    return AnnotatorQuality(shipped_schema(), QualitySettings(critic="rouge-l", min_decisions=min_decisions))


def test_gold_agreement_is_the_share_of_decisions_matching_the_critic():
    scores = quality()
    scores.add(task(1, {1: ["c0"], 2: ["c1"], 3: ["c0", "c1"]}, gold=True))
    scores.add(task(2, {1: ["c0"]}))  # not gold: no gold decisions
    figures = scores.summary()["annotators"]
    assert scores.summary()["gold_tasks"] == 1
    assert (figures["1"]["gold_agreement"], figures["2"]["gold_agreement"], figures["3"]["gold_agreement"]) == (1, 0, 0.5)
    assert (figures["1"]["tasks"], figures["1"]["gold_tasks"], figures["1"]["gold_decisions"]) == (2, 1, 2)
    assert figures["1"]["basis"] == "gold"


def test_majority_agreement_leaves_the_annotator_out_of_their_own_majority():
    scores = quality()
    scores.add(task(1, {1: ["c0"], 2: ["c0"], 3: ["c0"], 4: ["c1"]}))
    scores.add(task(2, {1: ["c0"], 4: ["c1"]}))  # two people: no majority to compare with
    figures = scores.summary()["annotators"]
    assert figures["1"]["majority_agreement"] == 1.0 and figures["1"]["majority_decisions"] == 2
    assert figures["4"]["majority_agreement"] == 0.0 and figures["4"]["basis"] == "majority"
    assert figures["1"]["gold_agreement"] is None
    scores.add(task(3, {1: ["c0"], 2: ["c0", "c1"], 3: []}))  # for 1, the others split on c0 and on c1: ties
    assert scores.summary()["annotators"]["1"]["majority_decisions"] == 2


def test_quality_needs_enough_decisions_and_below_names_who_falls_short():
    scores = quality(min_decisions=4)
    scores.add(task(1, {1: ["c0"], 2: ["c1"]}, gold=True))
    assert scores.below(0.9) == set()  # two gold decisions each: not enough evidence to leave anyone out
    scores.add(task(2, {1: ["c0"], 2: ["c1"]}, gold=True))
    assert scores.below(0.9) == {2}
    assert scores.summary()["annotators"]["2"]["quality"] == 0.0


def test_leaving_out_keeps_a_task_complete_that_an_excluded_person_helped_complete():
    tasks = [task(1, {1: ["c0"], 2: ["c1"], 3: ["c0"]}, cancelled=(2,)), task(2, {2: ["c1"]}),
             task(3, {1: ["c0"]}), task(4, {2: ["c1"], 3: ["c0"]})]
    left = LeavingOut(frozenset({2}), required=2)
    out = list(left.apply(iter(tasks)))
    assert [[a["completed_by"] for a in t["annotations"] if not a["was_cancelled"]] for t in out] == [[1, 3], [], [], [3]]
    assert sum(a["was_cancelled"] for a in out[0]["annotations"]) == 1  # cancelled ones stay (counted as before)
    assert (left.excluded_annotations, left.tasks_affected, left.below_min, left.tasks_without_votes) == (2, 2, 2, 0)
    summary = left.summary()
    assert summary["excluded_annotators"] == [2] and summary["excluded_annotations"] == 2


def test_leaving_out_nobody_passes_tasks_unchanged():
    tasks = [task(1, {1: ["c0"]})]
    assert list(LeavingOut(frozenset(), required=3).apply(iter(tasks))) == tasks


def test_annotator_table_puts_the_worst_first_and_marks_who_was_left_out():
    scores = quality()
    scores.add(task(1, {1: ["c0"], 2: ["c1"]}, gold=True))
    section = {**scores.summary({1: "good@x", 2: "bad@x"}), "excluded_annotators": [2]}
    rows = annotator_table({"annotator_quality": section})
    assert [(r["annotator"], r["quality"], r["excluded"]) for r in rows] == [("bad@x", 0.0, True), ("good@x", 1.0, False)]
    assert annotator_table(section) == rows
    text = format_table(rows)
    assert text.splitlines()[0].split() == ["annotator", "tasks", "gold_tasks", "gold_agreement", "majority_agreement",
                                            "quality", "basis", "excluded"]
    assert "bad@x" in text.splitlines()[1] and format_table([]) == "(no annotations yet)"


def test_the_gold_rule_is_stable_and_takes_about_the_share():
    ids = [f"shapes-train-{n:05d}" for n in range(2000)]
    assert not any(is_gold_item(i, 0.0) for i in ids) and all(is_gold_item(i, 1.0) for i in ids)
    share = sum(is_gold_item(i, 0.1) for i in ids) / len(ids)
    assert 0.08 < share < 0.12
    assert [i for i in ids if is_gold_item(i, 0.05)] == [i for i in ids if is_gold_item(i, 0.05)]
    assert set(i for i in ids if is_gold_item(i, 0.05)) <= set(i for i in ids if is_gold_item(i, 0.1))
    gold_id = next(i for i in ids if is_gold_item(i, 0.1))
    assert gold_meta({"references": ["r"]}, gold_id, 0.1) == {"references": ["r"], GOLD: True, GOLD_SHARE: 0.1}
    assert gold_meta({"references": ["r"], GOLD: True, GOLD_SHARE: 0.1}, gold_id, 0.0) == {"references": ["r"]}


def test_error_rates_one_for_all_or_one_each():
    assert error_rates(0.1, 3) == [0.1, 0.1, 0.1]
    assert error_rates((0.05, 0.5), 2) == [0.05, 0.5]
    with pytest.raises(IllumeError, match="2 rates for 5 annotators"):
        error_rates((0.05, 0.5), 5)
    with pytest.raises(IllumeError, match="between 0 and 1"):
        error_rates((0.05, 1.5), 2)


def test_task_crowd_draws_the_same_people_for_a_task_every_run():
    crowd = list(range(5))
    assert task_crowd(crowd, 7, None, 0) == crowd and task_crowd(crowd, 7, 5, 0) == crowd
    drawn = task_crowd(crowd, 7, 3, 0)
    assert len(set(drawn)) == 3 and drawn == task_crowd(crowd, 7, 3, 0)
    assert len({tuple(sorted(task_crowd(crowd, t, 3, 0))) for t in range(50)}) > 3


def test_cli_error_rate_takes_one_rate_or_a_list():
    from click.testing import CliRunner

    from connector.cli import main

    result = CliRunner().invoke(main, ["annotate", "--help"])
    assert "--error-rate" in result.output and "--per-task" in result.output
    result = CliRunner().invoke(main, ["annotate", "--simulate", "--project", "x", "--url", "http://127.0.0.1:9",
                                       "--api-key", "k", "--error-rate", "0.1,nope"])
    assert result.exit_code == 2 and "comma-separated list of numbers" in result.output
    result = CliRunner().invoke(main, ["export", "--help"])
    assert "--min-annotator-quality" in result.output and "--gold-critic" in result.output
