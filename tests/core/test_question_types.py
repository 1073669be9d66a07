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
