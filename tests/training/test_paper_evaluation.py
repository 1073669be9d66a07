"""Evaluation in both scoring modes: the paper's rationale follows the model's own answer."""
from __future__ import annotations

from illume.metrics import answer_accuracy, scored_as
from illume.vlm import VLM
from connector.training_job import read_eval_items
from illume.evaluation import evaluate


def test_paper_mode_explains_the_generated_answer_and_scores_both_ways(eval_items, tiny_model_dir, monkeypatch):
    items = read_eval_items(eval_items)
    vlm = VLM.load(str(tiny_model_dir("llava")), device="cpu")
    explained: list[list[str]] = []  # the answers each explain() call was conditioned on
    answered: list[str] = []
    real_explain, real_answer = VLM.explain, VLM.answer

    def spy_explain(self, queries, **kwargs):
        explained.append([q.answer for q in queries])
        return real_explain(self, queries, **kwargs)

    def spy_answer(self, queries, **kwargs):
        answered.extend(found := real_answer(self, queries, **kwargs))
        return found

    monkeypatch.setattr(VLM, "explain", spy_explain)
    monkeypatch.setattr(VLM, "answer", spy_answer)
    scores = evaluate(vlm, items, batch_size=len(items), meteor=False)

    gold = [i.answer for i in items]
    differ = [own for own, g in zip(answered, gold) if own != g]
    assert differ  # the tiny model answers at random
    assert explained[0] == gold  # the default mode: after the gold answer
    assert explained[1] == differ  # the paper's: again, only where the model answered otherwise
    assert scores["scoring"] == "default" and set(scores["paper"]) >= {"rouge_l", "bleu_4", "cider", "accuracy"}
    assert scores["paper"]["accuracy"] == answer_accuracy(answered, gold, "paper")
    assert scores["accuracy"] == answer_accuracy(answered, gold)
    assert scored_as(scores, "paper") == scores["paper"] and scored_as(scores, "default")["rouge_l"] == scores["rouge_l"]

    paper_first = evaluate(vlm, items, batch_size=len(items), meteor=False, scoring="paper", also=())
    assert paper_first["scoring"] == "paper" and "default" not in paper_first
    assert paper_first["rouge_l"] == scores["paper"]["rouge_l"]  # same seed, same rationales
    assert scored_as(paper_first, "default") == {}


def test_kept_rationales_are_the_scored_ones_in_item_order(eval_items, tiny_model_dir):
    items = read_eval_items(eval_items)
    vlm = VLM.load(str(tiny_model_dir("llava")), device="cpu")
    assert "rationales" not in evaluate(vlm, items, batch_size=2, meteor=False, also=())
    for mode in ("default", "paper"):
        scores = evaluate(vlm, items, batch_size=2, meteor=False, scoring=mode, also=(), keep_rationales=True)
        assert len(scores["rationales"]) == len(items)
        assert [e["rationale"] for e in scores["examples"]] == scores["rationales"][:len(scores["examples"])]
