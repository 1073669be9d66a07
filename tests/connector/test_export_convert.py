"""The pure conversion (no server): LS tasks -> Feedback -> rows/pairs, merging, refusals."""
from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from connector.agreement import Agreement
from connector.export import ExportOptions, convert
from connector.judging import judge_task
from illume.labeling_schema import shipped_schema
from illume.errors import IllumeError
from illume.records import TrainingRow, read_jsonl


def png_uri(color="red") -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), color).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def task(item, candidates, *annotations, image=None):
    return {"id": hash(item) % 1000, "data": {"item_id": item, "image": image or png_uri(), "question": "q?",
                                              "answer": "a", "candidates": [{"value": c, "alias": f"c{i}"} for i, c in enumerate(candidates)]},
            "annotations": [{"id": k, "completed_by": k, "was_cancelled": cancelled,
                             "result": [{"from_name": "rationales", "type": "choices", "value": {"choices": ticks}}]}
                            for k, (ticks, cancelled) in enumerate(annotations, start=1)]}


def test_duplicates_whitespace_and_min_agreement_above_annotators():
    judged = judge_task(task("x", ["a  b", "a b", "c"], (["c0", "c1"], False), (["c2"], False)),
                        min_agreement=3)
    assert judged.feedback.candidates == ["a b", "c"]
    assert judged.feedback.accepted == [] and judged.feedback.rejected == ["a b", "c"]
    assert judge_task(task("x", ["a"], (["c0"], True))) is None  # only cancelled


def test_fleiss_kappa_matches_the_textbook_formula_on_perfect_and_split_votes():
    agreement = Agreement()
    agreement.add(judge_task(task("x", ["a", "b"], (["c0"], False), (["c0"], False))))
    assert agreement.fleiss() == 1.0
    agreement.add(judge_task(task("y", ["a", "b"], (["c0"], False), (["c1"], False))))
    # decisions: (2,0),(0,2),(1,1),(1,1): P = 1,1,0,0; p_yes = 0.5 -> kappa = (0.5-0.5)/0.5 = 0
    assert agreement.fleiss() == 0.0


def test_merge_turns_answer_only_into_rationale_and_keeps_images(tmp_path):
    convert([task("x", ["r"], ([], False)), task("y", ["s"], (["c0"], False), image=png_uri("blue"))], tmp_path / "e0")
    assert [(r.kind, r.item_id) for r in read_jsonl(tmp_path / "e0" / "rows.jsonl", TrainingRow)] == [
        ("rationale", "y"), ("answer", "x")]
    manifest = convert([task("x", ["r2"], (["c0"], False))], tmp_path / "e1",
                       ExportOptions(previous=tmp_path / "e0", iteration=1))
    rows = read_jsonl(tmp_path / "e1" / "rows.jsonl", TrainingRow)
    assert [(r.kind, r.item_id, r.rationale, r.iteration) for r in rows] == [
        ("rationale", "y", "s", 0), ("rationale", "x", "r2", 1)]
    assert all((tmp_path / "e1" / r.image).is_file() for r in rows)
    assert manifest["counts"]["images"] == 2 and set(manifest["images"]) == {r.image for r in rows}


def test_out_dir_that_is_not_an_export_is_refused(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "precious.txt").write_text("keep me")
    with pytest.raises(IllumeError, match="not an export directory"):
        convert([task("x", ["r"], (["c0"], False))], tmp_path / "data")
    assert (tmp_path / "data" / "precious.txt").read_text() == "keep me"


def test_manifest_hashes_match_files(tmp_path):
    from illume.records import sha256_file

    manifest = convert([task("x", ["r", "s"], (["c0"], False))], tmp_path / "e")
    for name, digest in manifest["files"].items():
        assert sha256_file(tmp_path / "e" / name) == digest
    assert json.loads((tmp_path / "e" / "manifest.json").read_text())["counts"]["pairs"] == 1


def test_predictions_as_ids_or_objects():
    from connector.judging import pre_ticked
    from connector.status import prediction_version

    prediction = {"id": 7, "model_version": "v2", "result": [
        {"from_name": "rationales", "type": "choices", "value": {"choices": ["c1"]}}]}
    assert prediction_version(7, {7: prediction}) == prediction_version(prediction, {}) == "v2"
    schema = shipped_schema()
    assert pre_ticked({"parent_prediction": 7, "prediction": prediction}, schema) == ["c1"]  # Label Studio's export
    assert pre_ticked({"parent_prediction": prediction}, schema) == ["c1"]  # an export that expands predictions
    assert pre_ticked({"parent_prediction": None, "prediction": prediction}, schema) is None  # not started from it


def test_fleiss_kappa_matches_statsmodels():
    import random

    from statsmodels.stats.inter_rater import fleiss_kappa

    rng = random.Random(3)
    agreement, table = Agreement(), []
    for index in range(12):  # 12 tasks x 3 candidates, 3 annotators each, biased towards agreeing
        candidates = [f"rationale {index} {k}" for k in range(3)]
        truth = [rng.random() < 0.5 for _ in candidates]
        votes = [[f"c{k}" for k, good in enumerate(truth) if good != (rng.random() < 0.25)] for _ in range(3)]
        agreement.add(judge_task(task(f"item-{index}", candidates, *[(v, False) for v in votes])))
        for k in range(3):
            yes = sum(f"c{k}" in v for v in votes)
            table.append([yes, 3 - yes])
    assert agreement.fleiss() == pytest.approx(fleiss_kappa(table, method="fleiss"), abs=1e-6)
    assert 0.2 < agreement.fleiss() < 0.9  # a case where the formula's terms all matter


def test_an_annotators_latest_annotation_replaces_their_earlier_ones():
    repeated = task("x", ["a", "b"], (["c0"], False), (["c0"], False))
    repeated["annotations"].append({"id": 3, "completed_by": {"id": 1}, "was_cancelled": False, "lead_time": 4.0,
                                    "result": [{"from_name": "rationales", "type": "choices",
                                                "value": {"choices": ["c1"]}}]})
    judged = judge_task(repeated)
    # user 1 changed their mind (c0 -> c1): c0 has 1 vote of 2 people, c1 has 1; no strict majority
    assert judged.feedback.annotators == 2 and judged.feedback.annotation_ids == [2, 3]
    assert judged.feedback.accepted == [] and judged.notes["repeat_annotations"] == 1
    assert judged.votes == [{"a": True, "b": False}, {"a": False, "b": True}]


def test_a_task_with_text_the_tokenizer_cannot_take_is_left_out_and_the_rest_exported(tmp_path):
    long_rationale = task("long", ["r"], ([], False))
    long_rationale["annotations"][0]["result"].append(
        {"from_name": "written_rationale", "type": "textarea", "value": {"text": ["why " * 600]}})
    broken_question = task("broken", ["r"], (["c0"], False))
    broken_question["data"]["question"] = "what colour \ud800 is it?"  # a lone surrogate, as JSON "\ud800" gives
    good = task("good", ["fine \x07"], (["c0"], False))  # a control character in model output passes
    manifest = convert([long_rationale, broken_question, good], tmp_path / "e")
    assert manifest["counts"]["completed"] == 1 and manifest["counts"]["refused_texts"] == 2
    reasons = {r["item_id"]: r["reason"] for r in manifest["refused_texts"]}
    assert "written rationale 1 is 2399 characters long, over the limit of 2000" in reasons["long"]
    assert "its question is not valid Unicode (a lone surrogate U+D800" in reasons["broken"]
    rows = read_jsonl(tmp_path / "e" / "rows.jsonl", TrainingRow)
    assert [(r.item_id, r.rationale) for r in rows] == [("good", "fine \x07")]
    for name in ("rows.jsonl", "preferences.jsonl", "feedback.jsonl"):
        (tmp_path / "e" / name).read_bytes().decode("utf-8")  # nothing half-written or undecodable


def test_lead_times_that_are_not_finite_seconds_are_unknown():
    timed = task("x", ["a"], (["c0"], False), (["c0"], False), (["c0"], False))
    for annotation, value in zip(timed["annotations"], ("inf", "nan", "12.5")):
        annotation["lead_time"] = value
    assert judge_task(timed).feedback.lead_times == [None, None, 12.5]


def test_answer_pool_draws_from_all_items_never_held_out_ones(tmp_path):
    from connector.export_project import ProjectExportOptions
    from connector.export_writer import AnswerPool

    tasks = [task("r1", ["because"], (["c0"], False)), task("r2", ["since"], (["c0"], False)),
             task("no-tick", ["x"], ([], False))]
    tasks += [task(f"u{n}", ["y"]) for n in range(12)]  # imported, nobody annotated them: their answers count
    held_out = frozenset({"u0", "u1", "u2", "no-tick"})

    def export(name, ratio, seed=0):
        options = ProjectExportOptions(answer_pool=AnswerPool(ratio=ratio, seed=seed), held_out=held_out)
        manifest = convert(tasks, tmp_path / name, options)
        rows = read_jsonl(tmp_path / name / "rows.jsonl", TrainingRow)
        return manifest, sorted(r.item_id for r in rows if r.kind == "answer")

    manifest, drawn = export("small", ratio=3)  # 2 rationale rows x 3
    assert len(drawn) == 6 and not set(drawn) & held_out and not set(drawn) & {"r1", "r2"}
    assert set(drawn) <= {f"u{n}" for n in range(3, 12)}
    assert manifest["answer_pool"] == {"source": "project", "ratio": 3, "seed": 0, "project_items": 15,
                                       "held_out_excluded": 4, "with_rationale": 2, "eligible": 9, "topped_up": 0,
                                       "drawn": 6}
    assert manifest["counts"]["answer_rows"] == 6 and manifest["rationale_weight"] == 3.0
    assert export("again", ratio=3)[1] == drawn  # seeded
    assert export("other-seed", ratio=3, seed=5)[1] != drawn
    capped_manifest, capped = export("capped", ratio=10)  # 20 wanted, 9 without a rationale: topped up with r1, r2
    assert capped == sorted(["r1", "r2", *(f"u{n}" for n in range(3, 12))])
    assert capped_manifest["answer_pool"]["topped_up"] == 2 and not set(capped) & held_out
    plain = convert(tasks, tmp_path / "plain", ProjectExportOptions(held_out=held_out))  # no pool: as before
    assert plain["counts"]["answer_rows"] == 0 and plain["answer_pool"] == {"source": "annotated", "drawn": 0}
    assert convert(tasks, tmp_path / "plain2")["counts"]["answer_rows"] == 1  # "no-tick", when not held out
    nothing_accepted = convert([t for t in tasks if t["data"]["item_id"] not in {"r1", "r2"}], tmp_path / "none",
                               ProjectExportOptions(answer_pool=AnswerPool(ratio=3), held_out=held_out))
    assert nothing_accepted["counts"]["answer_rows"] == 3  # as if one rationale row: answers still trained


def test_the_answer_pools_draw_is_one_function_for_export_and_benchmark():
    from connector.export_writer import AnswerPool

    items = [f"i{n}" for n in range(30)]
    pool = AnswerPool(ratio=2, seed=1)
    drawn, record = pool.draw(items, with_rationale={"i0", "i1"}, held_out=frozenset({"i2", "i3"}),
                              rationale_rows=4, iteration=1)
    assert len(drawn) == 8 and drawn == sorted(drawn) and not set(drawn) & {"i0", "i1", "i2", "i3"}
    assert record == {"source": "project", "ratio": 2, "seed": 1, "project_items": 30, "held_out_excluded": 2,
                      "with_rationale": 2, "eligible": 26}
    assert pool.draw(items, {"i0", "i1"}, frozenset({"i2", "i3"}), 4, iteration=2)[0] != drawn  # new each round
