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
