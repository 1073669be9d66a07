"""benchmarks/question_types.py: feedback coverage per question type counts an item once, after any
iteration up to the one asked for, and only items that got feedback."""
import pytest

from illume.errors import IllumeError
from illume.records import Feedback, Item, write_jsonl


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("question_types")


def item(n, kind):
    return Item(f"item-{n}", "x.png", "q?", "a", [], meta={"qtype": kind})


def feedback(n, iteration, accepted):
    return Feedback(f"item-{n}", "x.png", "q?", "a", ["it is so."], accepted=["it is so."] if accepted else [],
                    rejected=[] if accepted else ["it is so."], iteration=iteration)


def test_coverage_per_type_up_to_the_iteration(bench, tmp_path):
    pool = [item(0, "shape"), item(1, "shape"), item(2, "color"), item(3, "color")]  # item 3 got no feedback
    write_jsonl(tmp_path / "feedback_1.jsonl", [feedback(0, 1, False), feedback(1, 1, True), feedback(2, 1, False)])
    write_jsonl(tmp_path / "feedback_2.jsonl", [feedback(0, 2, True), feedback(1, 2, True), feedback(2, 2, False)])
    assert bench.covered_by_type(tmp_path, pool, 1) == {"color": (0, 1), "shape": (1, 2)}
    assert bench.covered_by_type(tmp_path, pool, 2) == {"color": (0, 1), "shape": (2, 2)}
    with pytest.raises(IllumeError, match="feedback_3.jsonl is missing"):
        bench.covered_by_type(tmp_path, pool, 3)


def test_true_candidates_are_counted_by_the_scene_not_the_ticks(bench, tmp_path):
    from illume.datasets import shapes

    pool = shapes.generate(tmp_path / "data", seed=0, sizes={"val": 2})["val"]
    true, unknown = pool[0], pool[1]
    write_jsonl(tmp_path / "feedback_1.jsonl", [  # nothing ticked, as under a ROUGE-L bar nothing met
        Feedback(true.item_id, true.image, true.question, true.answer, [true.explanations[0]], accepted=[],
                 rejected=[true.explanations[0]], iteration=1),
        Feedback(unknown.item_id, unknown.image, unknown.question, unknown.answer, ["the picture is lovely."],
                 accepted=[], rejected=["the picture is lovely."], iteration=1)])
    kinds = {true.meta["qtype"], unknown.meta["qtype"]}
    assert sum(c for c, _ in bench.covered_by_type(tmp_path, pool, 1).values()) == 0
    found = bench.covered_by_type(tmp_path, pool, 1, true_ones=True)
    assert set(found) == kinds and sum(c for c, _ in found.values()) == 1
    assert found[true.meta["qtype"]][0] == 1
