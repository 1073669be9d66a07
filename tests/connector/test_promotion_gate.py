"""The promotion gate: a new adapter replaces the serving model only if its rationales are not
worse and its answers did not get worse by more than the allowed points."""
from __future__ import annotations

import pytest

from connector.training_job import gate
from illume.errors import IllumeError

SERVING = {"rouge_l": 40.0, "cider": 60.0, "accuracy": 96.0}


def test_better_rationales_and_steady_answers_are_promoted():
    decision = gate({"rouge_l": 50.0, "accuracy": 95.0}, SERVING, "rouge_l")
    assert decision.promote and (decision.new_score, decision.old_score) == (50.0, 40.0)
    assert "answer accuracy 95.0" in decision.reason


def test_worse_rationales_are_refused_unless_within_the_tolerance():
    assert not gate({"rouge_l": 39.0, "accuracy": 96.0}, SERVING, "rouge_l").promote
    assert gate({"rouge_l": 39.0, "accuracy": 96.0}, SERVING, "rouge_l", tolerance=1.5).promote


def test_better_rationales_bought_with_answers_are_refused():
    decision = gate({"rouge_l": 60.0, "accuracy": 93.0}, SERVING, "rouge_l")  # 3 points lost, 2 allowed
    assert not decision.promote
    assert "fell by 3.0 points" in decision.reason and "keeping the serving model" in decision.reason
    assert gate({"rouge_l": 60.0, "accuracy": 93.0}, SERVING, "rouge_l", max_accuracy_drop=3.0).promote
    assert gate({"rouge_l": 60.0, "accuracy": 10.0}, SERVING, "rouge_l", max_accuracy_drop=None).promote


def test_both_problems_are_named():
    reason = gate({"rouge_l": 30.0, "accuracy": 80.0}, SERVING, "rouge_l").reason
    assert "rouge_l 30.0000 is below" in reason and "fell by 16.0 points" in reason


def test_another_metric_can_gate_and_an_unknown_one_is_a_clear_error():
    assert gate({"cider": 70.0, "accuracy": 96.0}, SERVING, "cider").promote
    with pytest.raises(IllumeError, match="no metric 'bleu_9'"):
        gate({"rouge_l": 50.0}, SERVING, "bleu_9")
