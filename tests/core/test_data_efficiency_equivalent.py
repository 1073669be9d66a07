"""benchmarks/data_efficiency.py: ILLUME's best arm placed on the SFT curve, in the paper's unit (items
of references per item ILLUME holds a rationale for), and SFT 1x stays the feedback-items arm."""
import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("data_efficiency")


def sft(bench, items, rouge, multiple, unit=None):
    return {"kind": "sft", "arm": f"sft {items}", "items": items, "rouge_l": rouge, "multiple": multiple,
            "unit": unit or bench.FEEDBACK_UNIT, "judged": 0, "written": 3 * items}


def illume(rouge, iteration, rationale_items, judged=1000):
    return {"kind": "illume", "arm": f"ILLUME iteration {iteration}", "iteration": iteration, "rouge_l": rouge,
            "rationale_items": rationale_items, "judged": judged}


def test_log_linear_between_the_bracketing_sft_points(bench):
    rows = [sft(bench, 50, 55.0, 1, bench.RATIONALE_UNIT), sft(bench, 100, 65.0, 1), sft(bench, 200, 70.0, 2),
            illume(52.0, 1, 30), illume(60.0, 3, 50)]
    eq = bench.sft_equivalent(rows)
    # halfway in ROUGE-L between 50 and 100 items: sqrt(50 * 100) items
    assert eq["arm"] == "ILLUME iteration 3" and eq["bound"] == "="
    assert eq["sft_items"] == pytest.approx(70.7, abs=0.05)
    assert eq["ratio"] == pytest.approx(70.71 / 50, abs=0.01)


def test_outside_the_measured_points_is_a_bound(bench):
    below = bench.sft_equivalent([sft(bench, 100, 65.0, 1), sft(bench, 200, 70.0, 2), illume(60.0, 3, 50)])
    assert (below["bound"], below["sft_items"], below["ratio"]) == ("<", 100, 2.0)
    above = bench.sft_equivalent([sft(bench, 100, 65.0, 1), sft(bench, 200, 70.0, 2), illume(72.0, 3, 40)])
    assert (above["bound"], above["sft_items"], above["ratio"]) == (">", 200, 5.0)
    assert bench.sft_equivalent([illume(60.0, 3, 50)]) is None


def test_break_even_compares_with_the_feedback_items_sft_1x_only(bench):
    # the rationale-items 1x arm (50 items, lower ROUGE-L) must not stand in for SFT 1x
    rows = [sft(bench, 50, 55.0, 1, bench.RATIONALE_UNIT), sft(bench, 100, 65.0, 1), illume(60.0, 3, 50)]
    assert bench.break_even(rows)["ratio"] == "never"
    rows.append(illume(66.0, 4, 60, judged=900))
    assert bench.break_even(rows) == {"ratio": 3.0, "arm": "ILLUME iteration 4",
                                     "why": "900 candidates judged vs 300 explanations written"}
