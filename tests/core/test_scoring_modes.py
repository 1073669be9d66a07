"""--scoring in the loop's summary and the report: evaluations record both modes, either is shown."""
from __future__ import annotations

import json

from click.testing import CliRunner

from connector.cli import main
from connector.loop import summary_table
from connector.report import in_scoring, render

# what illume.evaluation records: the default mode's figures, and the paper's under "paper"
ROUNDS = {"0": {"metrics": {"rouge_l": 41.5, "cider": 80.0, "accuracy": 96.0, "scoring": "default",
                            "paper": {"rouge_l": 30.25, "cider": 60.0, "accuracy": 97.0}},
                "version": "base"},
          "1": {"acceptance": {"rate": 0.2}, "items_with_accepted": 50, "items_judged": 100,
                "counts": {"rationale_rows": 60}, "version": "illume-round1",
                "diversity": {"candidates_per_item": 6.0, "distinct_2": 0.4},
                "metrics": {"rouge_l": 50.0, "cider": 90.0, "accuracy": 95.0}}}  # recorded before both modes


def test_summary_table_shows_the_chosen_mode():
    default, paper = summary_table(ROUNDS), summary_table(ROUNDS, "paper")
    assert "41.5" in default and "30.2" not in default
    assert "30.2" in paper and "97.0" in paper and "41.5" not in paper
    assert "50.0" in default and "50.0" not in paper.splitlines()[3]  # round 1 has no paper figures: "-"


def test_report_renders_the_chosen_mode_and_says_which(tmp_path):
    rounds = {int(k): v for k, v in ROUNDS.items()}
    page = render(tmp_path, in_scoring(rounds, "paper"), {}, "paper")
    assert "30.2" in page
    assert "41.5" not in page and "paper scoring" in page and "nlg-eval" in page
    assert "default scoring" in render(tmp_path, in_scoring(rounds, "default"), {})

    (tmp_path / "loop.json").write_text(json.dumps({"rounds": ROUNDS}))
    result = CliRunner().invoke(main, ["report", "--run-dir", str(tmp_path), "--scoring", "paper",
                                       "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "out" / "index.html").read_text()
    assert "paper scoring" in html and "41.5" not in html
    bad = CliRunner().invoke(main, ["report", "--run-dir", str(tmp_path), "--scoring", "ptb"])
    assert bad.exit_code != 0 and "ptb" in bad.output


def test_data_efficiency_tables_read_either_mode_of_the_same_run(load_benchmark):
    bench = load_benchmark("data_efficiency")
    both = {"scoring": "default", "paper": {"rouge_l": 30.0, "cider": 0.5, "accuracy": 95.0}}
    report = {"demo": {"rouge_l": 40.0, "cider": 1.0, "accuracy": 90.0, **both},
              "loop": [{"iteration": 1, "candidates_judged_total": 10,
                        "illume": {"rouge_l": 50.0, "cider": 2.0, "accuracy": 91.0, "train_seconds": 3.0,
                                   "paper": {"rouge_l": 46.0, "cider": 1.0, "accuracy": 92.0}}}],
              "pref": {}, "sft": [{"multiple": 1, "items": 5, "explanations_written": 15, "rouge_l": 60.0, "cider": 3.0,
                                   "accuracy": 92.0, "paper": {"rouge_l": 45.0, "cider": 2.0, "accuracy": 93.0}}],
              "cost_model": {"judge_seconds": 5.0, "write_seconds": 30.0}}
    paper = bench.in_scoring(report, "paper")
    assert paper["loop"][0]["illume"]["rouge_l"] == 46.0 and paper["loop"][0]["illume"]["train_seconds"] == 3.0
    report["sft"][0]["paper"]["items"] = 12  # evaluated items: never the SFT arm's training items
    assert bench.in_scoring(report, "paper")["sft"][0]["items"] == 5
    # ILLUME reaches SFT 1x when scored the paper's way, not the default way
    assert bench.break_even(bench.arms(paper))["arm"] == "ILLUME iteration 1"
    assert bench.break_even(bench.arms(bench.in_scoring(report, "default")))["ratio"] == "never"
