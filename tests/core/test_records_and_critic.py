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


def test_paper_scoring_reproduces_nlg_eval_rouge_l_by_hand():
    reference = ["the ball is red and round"]  # 6 tokens in both modes
    # paper (nlg-eval: lower-cased, stripped, split on spaces): it | is | red, | and | round.
    #   LCS with the reference = "is and" = 2; P = 2/5, R = 2/6
    #   F = (1 + 1.2^2) P R / (R + 1.2^2 P) = 2.44 * 0.4 * 0.3333 / (0.3333 + 1.44 * 0.4) = 0.3253 / 0.9093 = 0.3578
    # default ([a-z0-9]+): it | is | red | and | round; LCS "is red and round" = 4; P = 4/5, R = 4/6
    #   F = 2.44 * 0.8 * 0.6667 / (0.6667 + 1.44 * 0.8) = 1.3013 / 1.8187 = 0.7155
    assert rouge_l("it is red, and round.", reference, "paper") == pytest.approx(0.3578, abs=1e-4)
    assert round(rouge_l("it is red, and round.", reference, "paper"), 2) == 0.36
    assert rouge_l("it is red, and round.", reference) == pytest.approx(0.7155, abs=1e-4)
    # "The cat sat." vs "the cat sat": paper the | cat | sat. -> LCS 2, P = R = 2/3, F = 2/3; default: identical, 1
    assert rouge_l("  The cat sat. ", ["the cat sat"], "paper") == pytest.approx(2 / 3)
    assert rouge_l("The cat sat.", ["the cat sat"]) == pytest.approx(1.0)
    # best precision and best recall over references, each on its own (as COCO's Rouge): vs "a dog." LCS 0;
    # vs "the dog. runs": LCS 2 -> P 1, R 2/3
    p, r = 1.0, 2 / 3
    assert rouge_l("the dog.", ["a dog.", "the dog. runs"], "paper") == pytest.approx(2.44 * p * r / (r + 1.44 * p))
    critic = RougeCritic(scoring="paper")
    # an attached full stop costs one token of six: LCS 5, P = R = 5/6, F = 0.83
    assert critic.tick(["it is red, and round.", "the ball is red and round."], reference) == [False, True]
    assert RougeCritic().tick(["it is red, and round."], reference) == [True]
    with pytest.raises(IllumeError, match="unknown scoring"):
        RougeCritic(scoring="nlg")


SCENE = {"shapes": [{"kind": "square", "color": "blue", "size": "large", "row": 0, "col": 0},
                    {"kind": "circle", "color": "purple", "size": "small", "row": 2, "col": 3}]}


def test_scene_critics_accept_only_what_is_true_and_supports_the_answer():
    from illume.critic import Subject, make_critic

    subject = Subject("What color is the square?", "blue", SCENE)
    references = ["the square is blue and large."]
    candidates = ["the purple square is large.",  # one word from the reference: ROUGE-L passes it, it is false
                  "the blue square is at the top left.",  # true, supports, ROUGE-L 0.4
                  "the square is blue and large."]
    assert make_critic("rouge-l").tick(candidates, references, subject) == [True, False, True]
    assert make_critic("scene").tick(candidates, references, subject) == [False, True, True]
    assert make_critic("scene+rouge-l").tick(candidates, references, subject) == [False, False, True]
    assert make_critic("auto").tick(candidates, references, subject) == [False, True, True]
    assert make_critic().tick(candidates, references, Subject("q?", "a")) == [True, False, True]  # no scene: ROUGE-L
    assert make_critic("scene+rouge-l", threshold=0.4).tick(candidates, references, subject) == [False, True, True]
    assert NoisyAnnotator(make_critic("scene"), 1.0).tick(candidates, references, subject) == [True, False, False]
    with pytest.raises(IllumeError, match="needs each item's scene"):
        make_critic("scene").tick(candidates, references)
    with pytest.raises(IllumeError, match="takes no threshold"):
        make_critic("scene", threshold=0.5)
    with pytest.raises(IllumeError, match="unknown scoring"):
        make_critic("rouge-l", scoring="ptb")


def test_simulated_annotators_read_question_answer_and_scene_from_the_task():
    from connector.simulate import task_subject
    from illume.labeling_schema import LabelingSchema

    schema = LabelingSchema(image="image", question="question", answer="answer", candidates="candidates",
                            rationales="rationales", to_name="image")
    task = {"data": {"question": "What color is the square?", "answer": "blue"}, "meta": {"scene": SCENE}}
    subject = task_subject(task, schema)
    assert (subject.question, subject.answer, subject.scene) == ("What color is the square?", "blue", SCENE)
    assert task_subject({"data": {}, "meta": {"references": ["x"]}}, schema).scene is None


def test_a_critic_overriding_tick_without_a_subject_still_works():
    from illume.critic import Critic, Subject

    class FirstOnly(Critic):  # written before critics saw the item's question, answer and scene
        def tick(self, candidates, references):
            return [i == 0 for i in range(len(candidates))]

    assert NoisyAnnotator(FirstOnly()).tick(["a", "b"], ["r"], Subject("q", "a", SCENE)) == [True, False]
