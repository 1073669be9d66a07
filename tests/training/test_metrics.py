"""Metric code against hand-computed values, and on the real VQA-X val split."""
from __future__ import annotations

import math

import pytest

from illume.errors import IllumeError
from illume.metrics import answer_accuracy, rationale_scores, score_all


def test_bleu_and_rouge_match_hand_computed_values():
    # candidate: the cat is on the mat / reference: the cat sat on the mat
    # unigrams 5/6 match (clipped "the" x2), bigrams 3/5, equal lengths so no brevity penalty;
    # LCS "the cat on the mat" = 5 tokens, P = R = 5/6, so ROUGE-L F = 5/6.
    scores = rationale_scores(["The cat is on the mat."], [["the cat sat on the mat"]], meteor=False)
    assert scores["bleu_1"] == pytest.approx(100 * 5 / 6, abs=1e-4)
    assert scores["bleu_2"] == pytest.approx(100 * math.sqrt(5 / 6 * 3 / 5), abs=1e-4)
    assert scores["rouge_l"] == pytest.approx(100 * 5 / 6, abs=1e-6)


def test_rouge_takes_best_precision_and_recall_over_references():
    # vs "a dog": LCS 1, P = R = 1/2 ; vs "the big dog runs": LCS 2, P = 1, R = 1/2 -> P 1, R 1/2
    scores = rationale_scores(["the dog"], [["a dog", "the big dog runs"]], meteor=False)
    p, r, beta2 = 1.0, 0.5, 1.2 ** 2
    assert scores["rouge_l"] == pytest.approx(100 * (1 + beta2) * p * r / (r + beta2 * p), abs=1e-6)


def test_cider_and_meteor_prefer_the_right_rationales():
    refs = [["the giraffe has a long neck", "it is tall"], ["the sky is blue", "it is daytime"],
            ["there are two dogs on the grass", "two dogs are visible"]]
    good = rationale_scores(["the giraffe has a long neck", "the sky is blue", "there are two dogs on the grass"], refs)
    bad = rationale_scores(["red square left", "one yes no", "above below"], refs)
    assert good["cider"] > 100 and bad["cider"] == pytest.approx(0, abs=1e-6)
    assert good["meteor"] > 90 and bad["meteor"] < 10
    assert good["bleu_4"] > 90 and bad["bleu_1"] == pytest.approx(0, abs=1e-6)


def test_answer_accuracy_ignores_case_and_punctuation():
    assert answer_accuracy(["Red.", "blue", " two "], ["red", "green", "two"]) == pytest.approx(200 / 3)
    with pytest.raises(IllumeError):
        answer_accuracy(["red"], ["red", "blue"])


def test_items_without_references_count_for_accuracy_only():
    scores = score_all(["x"], [[]], ["yes"], ["yes"])
    assert scores == {"accuracy": 100.0, "items": 1}
    with pytest.raises(IllumeError, match="no item has a reference"):
        rationale_scores(["x"], [[""]])


def test_vqax_val_one_reference_against_the_other_two(vqax_val_path):
    from illume.datasets.vqax import read_vqax

    items = [i for i in read_vqax(vqax_val_path) if len(i.explanations) == 3]
    assert len(items) > 700
    scores = rationale_scores([i.explanations[0] for i in items], [i.explanations[1:] for i in items])
    print({k: round(v, 2) for k, v in scores.items()})
    # Human agreement on VQA-X: well above random text, well below identical text.
    assert 40 < scores["bleu_1"] < 60 and 8 < scores["bleu_4"] < 20
    assert 30 < scores["rouge_l"] < 50 and 14 < scores["meteor"] < 26 and 60 < scores["cider"] < 110


def test_paper_scoring_keeps_punctuation_on_words_and_takes_substring_accuracy():
    # nlg-eval tokens: it | is | red, | and | round.  vs  the | ball | is | red | and | round
    # BLEU-1: 2 of 5 unigrams match ("is", "and"); brevity penalty exp(1 - 6/5); ROUGE-L 0.3578 (see the critic test)
    paper = rationale_scores(["It is red, and round."], [["the ball is red and round"]], meteor=False, scoring="paper")
    assert paper["bleu_1"] == pytest.approx(100 * 0.4 * math.exp(1 - 6 / 5), abs=1e-3)
    assert paper["rouge_l"] == pytest.approx(35.78, abs=0.01)
    default = rationale_scores(["It is red, and round."], [["the ball is red and round"]], meteor=False)
    assert default["rouge_l"] == pytest.approx(71.55, abs=0.01)
    # substring either way, lower-cased and stripped; an empty answer is never right
    assert answer_accuracy(["Red ball", "blue", "", "two"], ["red", "green", "no", "Two "], "paper") == 50.0
    assert answer_accuracy(["Red ball", "blue", "", "two"], ["red", "green", "no", "Two "]) == 25.0
    assert score_all(["x"], [[]], ["a yes"], ["yes"], scoring="paper") == {"accuracy": 100.0, "items": 1}
    with pytest.raises(IllumeError, match="unknown scoring"):
        answer_accuracy(["a"], ["a"], "ptb")


def test_paper_rouge_l_equals_cocos_rouge_on_the_lower_cased_stripped_strings():
    from pycocoevalcap.rouge.rouge import Rouge

    from illume.critic import rouge_l

    cases = [("it is red, and round.", ["the ball is red and round"]),
             ("The Square is BLUE.", ["the square is blue.", "it is blue"]),
             ("the  circle sits left", ["the circle sits left of the square", "circle left"]),
             ("a dog, a cat and a bird.", ["a cat.", "the dog", "a dog, a cat and a bird"])]
    for candidate, references in cases:
        coco = Rouge().calc_score([candidate.lower().strip()], [r.lower().strip() for r in references])
        assert rouge_l(candidate, references, "paper") == pytest.approx(coco, abs=1e-12), candidate
