"""Export against a real Label Studio: annotations made through the API -> exact rows and pairs."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from connector.export_project import export_project
from illume.errors import IllumeError
from illume.records import PreferencePair, TrainingRow, read_jsonl

pytestmark = pytest.mark.label_studio

PROMPT_RED = "what color? red, seeing that"


def rows_of(out: Path) -> list[tuple]:
    return [(r.kind, r.item_id, r.rationale) for r in read_jsonl(out / "rows.jsonl", TrainingRow)]


def pairs_of(out: Path) -> list[tuple]:
    return [(p.item_id, p.chosen, p.rejected) for p in read_jsonl(out / "preferences.jsonl", PreferencePair)]


def test_single_annotator_rows_pairs_cancelled_and_written(illume_project, tmp_path):
    kit = illume_project
    t1 = kit.add_task("a", ["the ball is red", "the sky is blue", "it is dark"])
    t2 = kit.add_task("b", ["grass is green", "cats purr"])
    t3 = kit.add_task("c", ["x marks", "y marks"])
    t4 = kit.add_task("d", ["never annotated"])
    kit.annotate(t1, ["c0", "c2"])
    kit.annotate(t2, none=True, written="the paint on it is red")
    kit.annotate(t3, ["c0"], cancelled=True)  # only a cancelled annotation: not completed
    manifest = export_project(kit.client, kit.project, tmp_path / "out")

    assert rows_of(tmp_path / "out") == [
        ("rationale", "a", "the ball is red"), ("rationale", "a", "it is dark"),
        ("rationale", "b", "the paint on it is red")]
    assert pairs_of(tmp_path / "out") == [
        ("a", "the ball is red", "the sky is blue"), ("a", "it is dark", "the sky is blue"),
        ("b", "the paint on it is red", "grass is green"), ("b", "the paint on it is red", "cats purr")]
    pair = read_jsonl(tmp_path / "out" / "preferences.jsonl", PreferencePair)[0]
    assert pair.prompt == PROMPT_RED and pair.images[0].startswith("images/")
    assert (tmp_path / "out" / pair.images[0]).read_bytes()[:4] == b"\x89PNG"
    assert manifest["counts"]["completed"] == 2 and manifest["counts"]["cancelled_annotations"] == 1
    assert manifest["counts"]["answer_rows"] == 0 and manifest["rationale_weight"] == 1.0
    assert manifest["acceptance"]["accepted"] == 2 and manifest["acceptance"]["candidates_shown"] == 5
    assert t4 and len(manifest["annotation_ids"]) == 2


def test_answer_only_rows_and_weight(illume_project, tmp_path):
    kit = illume_project
    ta = kit.add_task("a", ["good one", "bad one"])
    tb = kit.add_task("b", ["wrong"])
    tc = kit.add_task("c", ["also wrong"])
    kit.annotate(ta, ["c0"])
    kit.annotate(tb, none=True)
    kit.annotate(tc, [])
    manifest = export_project(kit.client, kit.project, tmp_path / "out")
    assert rows_of(tmp_path / "out") == [("rationale", "a", "good one"), ("answer", "b", None), ("answer", "c", None)]
    assert manifest["rationale_weight"] == 2.0


def test_several_annotators_majority_min_agreement_and_kappa(illume_project, tmp_path):
    kit = illume_project
    t1 = kit.add_task("a", ["r0", "r1", "r2"])
    t2 = kit.add_task("b", ["s0", "s1"])
    for user, ticks in (("ann1", ["c0", "c1"]), ("ann2", ["c0"]), ("ann3", ["c0", "c2"])):
        kit.annotate(t1, ticks, user=user)
    for user, ticks in (("ann1", ["c1"]), ("ann2", ["c1"]), ("ann3", [])):
        kit.annotate(t2, ticks, user=user)
    kit.annotate(t2, ["c0"], user="ann4", cancelled=True)

    majority = export_project(kit.client, kit.project, tmp_path / "majority")
    assert rows_of(tmp_path / "majority") == [("rationale", "a", "r0"), ("rationale", "b", "s1")]
    assert pairs_of(tmp_path / "majority") == [("a", "r0", "r1"), ("a", "r0", "r2"), ("b", "s1", "s0")]
    # votes per decision (3 raters): a: 3,1,1  b: 0,2 -> Fleiss' kappa by hand
    p_i = [1, 1 / 3, 1 / 3, 1, 1 / 3]  # (yes^2 + no^2 - n) / (n (n - 1))
    p_yes = 7 / 15
    expected = p_yes ** 2 + (1 - p_yes) ** 2
    assert majority["agreement"]["fleiss_kappa"] == pytest.approx((sum(p_i) / 5 - expected) / (1 - expected), abs=1e-6)
    assert majority["agreement"]["cohen_kappa"] is None  # three raters
    assert majority["counts"]["cancelled_annotations"] == 1

    anyone = export_project(kit.client, kit.project, tmp_path / "anyone", min_agreement=1)
    assert rows_of(tmp_path / "anyone") == [("rationale", "a", "r0"), ("rationale", "a", "r1"),
                                            ("rationale", "a", "r2"), ("rationale", "b", "s1")]
    assert anyone["acceptance"]["rule"] == "at least 1"


def test_two_annotators_report_cohen_kappa(illume_project, tmp_path):
    from sklearn.metrics import cohen_kappa_score

    kit = illume_project
    t1 = kit.add_task("a", ["r0", "r1", "r2"])
    t2 = kit.add_task("b", ["s0", "s1"])
    kit.annotate(t1, ["c0", "c1"], user="p1")
    kit.annotate(t1, ["c0"], user="p2")
    kit.annotate(t2, ["c1"], user="p1")
    kit.annotate(t2, ["c1"], user="p2")
    manifest = export_project(kit.client, kit.project, tmp_path / "out")
    expected = cohen_kappa_score([1, 1, 0, 0, 1], [1, 0, 0, 0, 1])
    assert manifest["agreement"]["cohen_kappa"] == pytest.approx(expected, abs=1e-6)
    # strict majority of two = both
    assert rows_of(tmp_path / "out") == [("rationale", "a", "r0"), ("rationale", "b", "s1")]


def test_reexport_is_byte_identical_and_merge_has_no_duplicates(illume_project, tmp_path):
    kit = illume_project
    t1 = kit.add_task("a", ["r0", "r1"])
    t2 = kit.add_task("b", ["s0"])
    kit.annotate(t1, ["c1"], written="typed one")
    kit.annotate(t2, [])
    first = export_project(kit.client, kit.project, tmp_path / "one")
    second = export_project(kit.client, kit.project, tmp_path / "two")
    names = sorted(str(p.relative_to(tmp_path / "one")) for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert names == sorted(str(p.relative_to(tmp_path / "two")) for p in (tmp_path / "two").rglob("*") if p.is_file())
    for name in names:
        if name != "manifest.json":
            assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    first.pop("created_at"), second.pop("created_at")
    assert first == second

    # iteration 1: item b gets a rationale, a new item c; the export merges iteration 0's rows
    t3 = kit.add_task("c", ["u0"])
    kit.annotate(t3, ["c0"])
    kit.annotate(t2, ["c0"], user="late")  # b now has 2 annotators: strict majority needs 2 -> none
    merged = export_project(kit.client, kit.project, tmp_path / "one", previous=tmp_path / "one", min_agreement=1)
    assert merged["iteration"] == 1
    assert rows_of(tmp_path / "one") == [("rationale", "a", "r1"), ("rationale", "a", "typed one"),
                                         ("rationale", "b", "s0"), ("rationale", "c", "u0")]
    iterations = [r.iteration for r in read_jsonl(tmp_path / "one" / "rows.jsonl", TrainingRow)]
    assert iterations == [0, 0, 1, 1]
    assert merged["counts"]["new_rationale_rows"] == 2
    for row in read_jsonl(tmp_path / "one" / "rows.jsonl", TrainingRow):
        assert (tmp_path / "one" / row.image).is_file()


def test_exception_between_files_leaves_previous_export(illume_project, tmp_path, monkeypatch):
    from connector import export_images

    kit = illume_project
    t1 = kit.add_task("a", ["r0"])
    t2 = kit.add_task("b", ["s0"], color="blue")
    kit.annotate(t1, ["c0"])
    export_project(kit.client, kit.project, tmp_path / "out")
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.is_file()}
    kit.annotate(t2, ["c0"])
    calls = []
    real_add = export_images.ImageCollector.add

    def failing_add(self, source, task_id=None):
        calls.append(source)
        if len(calls) == 2:
            raise RuntimeError("injected failure between two images")
        return real_add(self, source, task_id)

    monkeypatch.setattr(export_images.ImageCollector, "add", failing_add)
    with pytest.raises(RuntimeError, match="injected"):
        export_project(kit.client, kit.project, tmp_path / "out")
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.is_file()} == before
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".out.snapshot"))  # kept to resume
    assert left == ["out"]  # no temporary directory left


KILLABLE = r'''
import sys, time
from pathlib import Path
from illume.labelstudio.client import connect
from connector.export import ExportOptions, convert, iter_tasks
from connector.export_images import ImageCollector
from connector.export_project import export_policy
url, key, project, out, marker = sys.argv[1:]
client = connect(url, key)
with client.stream(f"/api/projects/{project}/export", params={"exportType": "JSON"}) as body:
    tasks = list(iter_tasks(body))

def stalled():
    yield from tasks
    Path(marker).write_text("all tasks converted, now stalled before the swap")
    while True:
        time.sleep(0.05)  # wait to be killed

convert(stalled(), out, ExportOptions(), images=lambda work: ImageCollector(work, export_policy(client)))
'''


def test_killed_export_leaves_previous_export(illume_project, tmp_path, label_studio):
    kit = illume_project
    t1 = kit.add_task("a", ["r0"])
    kit.annotate(t1, ["c0"])
    export_project(kit.client, kit.project, tmp_path / "out")
    before = {str(p): p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    t2 = kit.add_task("b", ["s0"])
    kit.annotate(t2, ["c0"])
    marker = tmp_path / "marker"
    process = subprocess.Popen([sys.executable, "-c", KILLABLE, label_studio.url, label_studio.token,
                                str(kit.id), str(tmp_path / "out"), str(marker)], cwd=Path(__file__).parents[2])
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert process.poll() is None, "the export process ended before it could be killed"
        assert time.monotonic() < deadline, "the export process did not reach the stall point"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert list(tmp_path.glob(".out.tmp-*")), "the killed export left its temporary directory"
    assert {str(p): p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()} == before
    manifest = export_project(kit.client, kit.project, tmp_path / "out")
    assert manifest["counts"]["completed"] == 2
    assert not list(tmp_path.glob(".out.tmp-*")), "stale temporaries are cleaned by the next export"


def test_nothing_completed_is_a_clear_error(illume_project, tmp_path):
    kit = illume_project
    task = kit.add_task("a", ["r0"])
    kit.annotate(task, ["c0"], cancelled=True)
    with pytest.raises(IllumeError, match="Nothing to export") as info:
        export_project(kit.client, kit.project, tmp_path / "out")
    assert "annotate" in info.value.todo
    assert not (tmp_path / "out").exists()


def test_none_wins_and_preticks_are_counted(illume_project, tmp_path):
    """The five ways an annotator answers a task, each with the rows and pairs it must give."""
    kit = illume_project
    none_and_tick = kit.add_task("a", ["the red triangle is large.", "it is red.", "it is round."])
    none_alone = kit.add_task("b", ["wrong one", "wrong two"])
    untouched = kit.add_task("c", ["the circle is red.", "the sky is green."])
    unticked = kit.add_task("d", ["the square is blue.", "the circle is big."])
    written_only = kit.add_task("e", ["bad one", "bad two"])
    # "None" submitted while the pre-tick still stands: None wins, the pre-ticked text is no row and no "chosen"
    kit.annotate(none_and_tick, ["c0"], none=True, from_prediction=kit.predict(none_and_tick, ["c0"]))
    kit.annotate(none_alone, none=True)
    kit.annotate(untouched, ["c0"], from_prediction=kit.predict(untouched, ["c0"]))
    kit.annotate(unticked, [], from_prediction=kit.predict(unticked, ["c0"]))
    kit.annotate(written_only, written="the circle is red all over")
    manifest = export_project(kit.client, kit.project, tmp_path / "out")

    assert rows_of(tmp_path / "out") == [
        ("rationale", "c", "the circle is red."), ("rationale", "e", "the circle is red all over"),
        ("answer", "a", None), ("answer", "b", None), ("answer", "d", None)]
    assert pairs_of(tmp_path / "out") == [
        ("c", "the circle is red.", "the sky is green."),
        ("e", "the circle is red all over", "bad one"), ("e", "the circle is red all over", "bad two")]
    assert manifest["reconciliation"]["none_with_ticks"] == 1
    assert manifest["preticks"] == {"annotations_from_prediction": 3, "preticked": 3, "kept": 1, "accepted": 1,
                                    "accepted_preticked_unchanged": 1, "accepted_preticked_unchanged_rate": 1.0}
    assert manifest["acceptance"]["accepted"] == 1


def test_a_hand_tick_beside_a_kept_pretick_counts_once(illume_project, tmp_path):
    kit = illume_project
    task = kit.add_task("a", ["pre-ticked and kept", "ticked by hand", "left alone"])
    kit.annotate(task, ["c0", "c1"], from_prediction=kit.predict(task, ["c0"]))
    manifest = export_project(kit.client, kit.project, tmp_path / "out")
    assert rows_of(tmp_path / "out") == [("rationale", "a", "pre-ticked and kept"), ("rationale", "a", "ticked by hand")]
    assert manifest["preticks"]["accepted_preticked_unchanged"] == 1 and manifest["preticks"]["accepted"] == 2


def test_min_annotator_quality_leaves_out_who_disagrees_with_gold(illume_project, tmp_path):
    from connector.annotator_quality import QualitySettings

    kit = illume_project
    truth, wrong = "the ball on the left is red", "nothing here at all"
    for k in range(3):  # gold: the reference says what c0 says
        task = kit.add_task(f"gold-{k}", [truth, wrong], references=[truth])
        kit.client.patch(f"/api/tasks/{task}", {"meta": {"references": [truth], "gold": True}})
        kit.annotate(task, ["c0"], user="careful")
        kit.annotate(task, ["c1"], user="careless")
    shared = kit.add_task("shared", ["r0", "r1"])
    kit.annotate(shared, ["c0"], user="careful")
    kit.annotate(shared, ["c1"], user="careless")
    alone = kit.add_task("alone", ["s0"])
    kit.annotate(alone, ["c0"], user="careless")
    settings = QualitySettings(min_quality=0.8, critic="rouge-l", min_decisions=4)

    everyone = export_project(kit.client, kit.project, tmp_path / "all", min_agreement=1,
                              quality=QualitySettings(critic="rouge-l", min_decisions=4))
    assert ("rationale", "shared", "r1") in rows_of(tmp_path / "all") and everyone["counts"]["completed"] == 5
    figures = everyone["annotator_quality"]["annotators"]
    careful, careless = str(kit.user("careful")), str(kit.user("careless"))
    assert (figures[careful]["quality"], figures[careless]["quality"]) == (1.0, 0.0)
    assert figures[careless]["name"] == "careless@illume.test" and figures[careless]["gold_decisions"] == 6

    kept = export_project(kit.client, kit.project, tmp_path / "kept", min_agreement=1, quality=settings)
    assert rows_of(tmp_path / "kept") == [("rationale", "gold-0", truth), ("rationale", "gold-1", truth),
                                          ("rationale", "gold-2", truth), ("rationale", "shared", "r0")]
    section = kept["annotator_quality"]
    assert section["threshold"] == 0.8 and section["excluded_annotators"] == [int(careless)]
    assert (section["excluded_annotations"], section["tasks_with_excluded_annotations"]) == (5, 5)
    assert section["tasks_left_without_votes"] == 1 and kept["counts"]["completed"] == 4
    assert kept["counts"]["min_annotations"] == 1
    on_disk = json.loads((tmp_path / "kept" / "manifest.json").read_text())
    assert on_disk["annotator_quality"] == json.loads(json.dumps(section))
