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


def test_answers_are_also_bounded_by_the_model_as_built_so_drops_cannot_add_up():
    built = {"rouge_l": 35.0, "accuracy": 97.0}
    serving = {"rouge_l": 40.0, "accuracy": 95.5}  # one promoted round already lost 1.5 points
    new = {"rouge_l": 45.0, "accuracy": 94.0}  # 1.5 below the serving model, 3.0 below the model as built
    assert gate(new, serving, "rouge_l").promote
    decision = gate(new, serving, "rouge_l", baseline=built)
    assert not decision.promote and "fell by 3.0 points from the model as built's 97.0" in decision.reason
    assert "serving model's" not in decision.reason.split(";")[0]
    assert gate({"rouge_l": 45.0, "accuracy": 95.0}, serving, "rouge_l", baseline=built).promote
    assert "model as built" not in gate(new, serving, "rouge_l", baseline=serving).reason  # round 1: the same model


def test_the_accuracy_floor_is_the_highest_reference_less_the_drop():
    from connector.training_job import accuracy_floor

    assert accuracy_floor(2.0, {"accuracy": 97.0}, {"accuracy": 95.5}, None) == 95.0
    assert accuracy_floor(None, {"accuracy": 97.0}) is None and accuracy_floor(2.0, None, {}) is None


def test_the_model_as_built_and_the_serving_model_are_each_evaluated_once(tmp_path, tiny_model_dir, monkeypatch):
    """Real evaluations on the tiny model, counted: the model as built is not evaluated again while it
    is the serving model, nor when its metrics are already known."""
    from peft import LoraConfig, get_peft_model
    from PIL import Image

    from connector import promotion
    from connector.promotion import GateSettings, reference_metrics
    from illume.records import Item
    from illume.vlm import VLM

    base = str(tiny_model_dir("llava"))
    Image.new("RGB", (40, 40), "red").save(tmp_path / "red.png")
    items = [Item(f"e{n}", str(tmp_path / "red.png"), "what color is the square ?", "red", ["it is red."])
             for n in range(2)]
    adapter = tmp_path / "adapter"
    get_peft_model(VLM.load(base).model, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(adapter)
    calls = []
    real = promotion.evaluate_model
    monkeypatch.setattr(promotion, "evaluate_model", lambda *args: calls.append(args[1]) or real(*args))

    serving, built = reference_metrics(base, None, items, GateSettings())
    assert calls == [None] and built is serving and "accuracy" in built
    calls.clear()
    serving, known = reference_metrics(base, str(adapter), items, GateSettings(), baseline=built)
    assert calls == [str(adapter)] and known is built
    calls.clear()
    assert reference_metrics(base, str(adapter), items, GateSettings(), serving, built) == (serving, built)
    assert calls == []
    assert reference_metrics(base, str(adapter), items, GateSettings(against_base=False), serving)[1] is None
    assert calls == []


def test_the_gate_compares_in_the_chosen_scoring(tmp_path):
    """Every evaluation records both scorings; --gate-scoring paper compares the paper's figures."""
    from connector.promotion import GateSettings, promote
    from illume.records import Item

    def scored(default_rouge, paper_rouge):
        return {"rouge_l": default_rouge, "accuracy": 96.0, "scoring": "default",
                "paper": {"rouge_l": paper_rouge, "accuracy": 96.0}}

    items = [Item("i", "x.png", "q?", "a", ["because"])]
    new, old = scored(50.0, 30.0), scored(40.0, 35.0)  # better by default tokens, worse by the paper's
    default = promote("adapter", "v", "base", tmp_path / "a", eval_items=items, metrics=new, serving_metrics=old,
                      baseline_metrics=old, settings=GateSettings())
    paper = promote("adapter", "v", "base", tmp_path / "b", eval_items=items, metrics=new, serving_metrics=old,
                    baseline_metrics=old, settings=GateSettings(scoring="paper"))
    assert default.promoted and not paper.promoted
    assert "30.0000 is below the serving model's 35.0000" in paper.reason and "[paper scoring]" in paper.reason
