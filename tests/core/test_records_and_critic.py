"""Record round-trips, atomic writes and the simulated critic."""
from __future__ import annotations

import os

import pytest

from illume.critic import NoisyAnnotator, RougeCritic, rouge_l
from illume.errors import IllumeError
from illume.records import (ANSWER_ONLY, RATIONALE, Item, TrainingRow, atomic_write_text, read_jsonl,
                            rationale_weight, write_jsonl)


def test_jsonl_round_trip(tmp_path):
    items = [Item("a", "a.png", "q?", "yes", ["because"], "train", {"k": 1}), Item("b", "b.png", "q2?", "no")]
    assert write_jsonl(tmp_path / "items.jsonl", items) == 2
    assert read_jsonl(tmp_path / "items.jsonl", Item) == items


def test_bad_record_line_is_named(tmp_path):
    (tmp_path / "rows.jsonl").write_text('{"kind": "rationale", "item_id": "a", "image": "i", "question": "q", "answer": "a"}\n')
    with pytest.raises(IllumeError, match=r"rows.jsonl, line 1: not a valid TrainingRow .*no rationale text"):
        read_jsonl(tmp_path / "rows.jsonl", TrainingRow)


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "old")

    def crash(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]  # no temp file left behind


def test_rationale_weight_is_answer_rows_over_rationale_rows():
    rows = [TrainingRow(RATIONALE, "a", "i", "q", "a", "r")] * 2 + [TrainingRow(ANSWER_ONLY, "b", "i", "q", "a")] * 20
    assert rationale_weight(rows) == 10.0
    assert rationale_weight(rows[:2]) == 1.0


def test_rouge_l_hand_computed():
    # candidate "the cat sat" vs reference "the cat sat on the mat": LCS 3, P = 1, R = 0.5
    p, r, beta = 1.0, 0.5, 1.2
    expected = (1 + beta ** 2) * p * r / (r + beta ** 2 * p)
    assert rouge_l("the cat sat", ["the cat sat on the mat"]) == pytest.approx(expected)
    assert rouge_l("The cat sat on the mat.", ["the cat sat on the mat", "a dog"]) == pytest.approx(1.0)
    assert rouge_l("ab", ["ab"]) == 0.0  # shorter than 3 characters
    assert rouge_l("totally different words", ["the cat sat"]) == 0.0


def test_critic_threshold_and_noisy_annotators():
    critic = RougeCritic(0.7)
    refs = ["the giraffe has a long neck"]
    assert critic.tick(["the giraffe has a long neck", "it is a zebra"], refs) == [True, False]
    perfect = NoisyAnnotator(critic, 0.0, seed=1)
    contrarian = NoisyAnnotator(critic, 1.0, seed=1)
    assert perfect.tick(["the giraffe has a long neck", "it is a zebra"], refs) == [True, False]
    assert contrarian.tick(["the giraffe has a long neck", "it is a zebra"], refs) == [False, True]
    noisy = NoisyAnnotator(critic, 0.3, seed=2)
    flips = sum(noisy.tick(["it is a zebra"], refs)[0] for _ in range(1000))
    assert 240 < flips < 360
    with pytest.raises(ValueError):
        NoisyAnnotator(critic, 1.5)


def test_a_second_critic_plugs_in_by_name_and_by_module_path():
    from illume.critic import Critic, NoisyAnnotator, make_critic

    class ExactMatch(Critic):  # a whole new critic: a name and one method
        name = "exact-test"

        def accepts(self, candidate, references):
            return candidate.strip().lower() in {r.strip().lower() for r in references}

    critic = make_critic("exact-test")
    assert isinstance(critic, ExactMatch)
    assert critic.tick(["It is red.", "it is red"], ["it is red"]) == [False, True]
    assert NoisyAnnotator(critic, error_rate=1.0).tick(["it is red"], ["it is red"]) == [False]
    assert make_critic("illume.critic:RougeCritic", threshold=0.5).threshold == 0.5
    with pytest.raises(IllumeError, match="takes no threshold"):
        make_critic("exact-test", threshold=0.5)
    with pytest.raises(IllumeError, match="unknown critic 'nope'"):
        make_critic("nope")


def test_candidate_diversity_counts_distinct_texts_and_bigrams():
    from illume.metrics import candidate_diversity
    from illume.records import Feedback

    feedback = [Feedback(item_id="a", image="a.png", question="q", answer="x",
                         candidates=["the red square", "The red square.", "a blue circle"], accepted=[], rejected=[]),
                Feedback(item_id="b", image="b.png", question="q", answer="y", candidates=["the red square"],
                         accepted=[], rejected=[])]
    scores = candidate_diversity(feedback)
    # item a: 2 distinct texts after normalisation, item b: 1 -> 1.5 per item
    # bigrams: (the red)(red square) x3 + (a blue)(blue circle) = 8, of which 4 distinct
    assert scores == {"candidates_per_item": 1.5, "distinct_2": 0.5}


def test_metrics_and_critic_load_without_torch():
    import subprocess
    import sys

    probe = "import sys, illume.metrics, illume.critic, illume.text; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
