"""Per-annotator quality on hand-made exported tasks: gold agreement, the others' majority, who is
left out, the gold rule and the per-annotator error rates of the simulated crowd."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from connector.annotator_quality import AnnotatorQuality, QualitySettings, annotator_table, format_table
from connector.export import ExportOptions, convert
from connector.export_project import ProjectExportOptions
from connector.gold import GOLD, GOLD_SHARE, gold_meta, is_gold_item
from connector.simulate import error_rates, task_crowd
from illume.errors import IllumeError
from illume.labeling_schema import shipped_schema

TRUE, FALSE = "the ball is red", "a blue cube stands there"
# a 1x1 PNG: the default image policy takes data: URIs only
PNG = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"


def task(task_id: int, votes: dict[int, list[str]], gold: bool = False, cancelled: tuple[int, ...] = ()) -> dict:
    """A task with candidates c0 (what the reference says) and c1 (not), and one annotation per voter."""
    annotations = [{"id": 100 * task_id + n, "completed_by": who, "was_cancelled": False,
                    "result": [{"from_name": "rationales", "to_name": "image", "type": "choices",
                                "value": {"choices": ticks}}] if ticks else []}
                   for n, (who, ticks) in enumerate(votes.items())]
    annotations += [{"id": 100 * task_id + 50 + n, "completed_by": who, "was_cancelled": True, "result": []}
                    for n, who in enumerate(cancelled)]
    return {"id": task_id, "data": {"image": PNG, "question": "what color is the ball?", "answer": "red",
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


def feedback_of(export) -> list[tuple[str, list[int]]]:
    lines = (export / "feedback.jsonl").read_text().splitlines()
    return [(f["item_id"], f["annotation_ids"]) for f in map(json.loads, lines)]


def test_excluded_annotators_are_left_out_of_tasks_complete_counting_everyone(tmp_path):
    tasks = [task(1, {1: ["c0"], 2: ["c1"], 3: ["c0"]}, cancelled=(2,)), task(2, {2: ["c1"]}),
             task(3, {1: ["c0"]}), task(4, {2: ["c1"], 3: ["c0"]}), task(5, {2: ["c1"], 5: ["c1"]})]
    options = ProjectExportOptions(min_annotations=2, min_agreement=1, excluded_annotators=frozenset({2, 5}),
                                   annotator_quality=lambda: {"threshold": 0.8})
    manifest = convert(iter(tasks), tmp_path / "e", options)
    # 2 and 3 wait for a second person; 5 was complete, but only excluded people voted on it
    assert feedback_of(tmp_path / "e") == [("item-1", [100, 102]), ("item-4", [401])]
    counts = manifest["counts"]
    assert (counts["min_annotations"], counts["below_min_annotations"], counts["completed"]) == (2, 2, 2)
    assert counts["cancelled_annotations"] == 1  # cancelled ones are counted as before
    assert manifest["annotator_quality"] == {"threshold": 0.8, "excluded_annotators": [2, 5],
                                             "excluded_annotations": 4, "tasks_with_excluded_annotations": 3,
                                             "tasks_left_without_votes": 1}


def test_excluding_nobody_exports_what_a_plain_conversion_does(tmp_path):
    tasks = [task(1, {1: ["c0"], 2: ["c1"]}), task(2, {1: ["c0"]})]
    plain = convert(iter(tasks), tmp_path / "plain", ExportOptions(min_annotations=2))
    manifest = convert(iter(tasks), tmp_path / "none", ProjectExportOptions(min_annotations=2))
    assert feedback_of(tmp_path / "none") == feedback_of(tmp_path / "plain") == [("item-1", [100, 101])]
    assert manifest["counts"] == plain["counts"] and "annotator_quality" not in manifest


def test_the_export_writes_its_final_manifest_once_before_the_swap(tmp_path, monkeypatch):
    """export_project (sync, on a stand-in client): the manifest.json swapped in already holds the
    exclusion figures and the real min_annotations, and is the manifest returned."""
    import io
    from contextlib import contextmanager

    import connector.export
    from connector.export_project import export_project
    from illume.labeling_schema import SHIPPED_CONFIG, shipped_text

    tasks = [task(k, {1: ["c0"], 2: ["c1"]}, gold=True) for k in range(1, 4)] + [task(4, {2: ["c1"]})]

    @contextmanager
    def stream(path, params=None):
        yield io.BytesIO(json.dumps(tasks).encode())

    client = SimpleNamespace(url="http://ls.test", stream=stream,
                             sdk=SimpleNamespace(users=SimpleNamespace(list=lambda: [
                                 SimpleNamespace(id=2, email="careless@x", username="careless")])))
    swapped = []

    def swap_in(work, out):
        swapped.append(json.loads((work / "manifest.json").read_text()))
        return real_swap(work, out)

    real_swap = connector.export.swap_in
    monkeypatch.setattr(connector.export, "swap_in", swap_in)
    project = {"id": 7, "title": "t", "label_config": shipped_text(SHIPPED_CONFIG), "maximum_annotations": 2}
    manifest = export_project(client, project, tmp_path / "out", min_agreement=1, method="sync",
                              quality=QualitySettings(min_quality=0.8, critic="rouge-l", min_decisions=4))
    on_disk = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert on_disk == swapped[0] == json.loads(json.dumps(manifest))
    section = on_disk["annotator_quality"]
    assert (section["threshold"], section["excluded_annotators"], section["excluded_annotations"]) == (0.8, [2], 3)
    assert (section["tasks_with_excluded_annotations"], section["tasks_left_without_votes"]) == (3, 0)
    assert section["annotators"]["2"]["name"] == "careless@x" and section["annotators"]["2"]["quality"] == 0.0
    assert (on_disk["counts"]["min_annotations"], on_disk["counts"]["below_min_annotations"]) == (2, 1)
    assert on_disk["counts"]["completed"] == 3


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
