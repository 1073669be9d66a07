"""Without a Java runtime, held-out evaluation still runs: METEOR is reported missing, not 0."""
from __future__ import annotations

import pytest

from connector.report import render
from connector.training_job import evaluate_model, gate, read_eval_items


def test_loop_evaluation_without_java_skips_meteor_and_the_gate_still_decides(
        tmp_path, eval_items, tiny_model_dir, monkeypatch):
    monkeypatch.setattr("illume.metrics._warned_no_java", False)
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no `java` to be found
    items = read_eval_items(eval_items)

    with pytest.warns(RuntimeWarning, match="METEOR skipped: no `java` on PATH"):
        scores = evaluate_model(str(tiny_model_dir("llava")), None, items)

    assert "meteor" not in scores
    for metric in ("bleu_1", "bleu_4", "rouge_l", "cider", "accuracy"):
        assert isinstance(scores[metric], float), metric
    serving = {**scores, "rouge_l": scores["rouge_l"] + 1.0}
    decision = gate(scores, serving, "rouge_l")
    assert not decision.promote and "rouge_l" in decision.reason
    assert gate(scores, scores, "rouge_l").promote
    with pytest.raises(Exception, match="METEOR needs a Java runtime"):
        gate(scores, scores, "meteor")

    page = render(tmp_path, {0: {"metrics": scores}}, {})
    assert "METEOR missing" in page and ">missing<" in page
