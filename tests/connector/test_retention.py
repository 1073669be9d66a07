"""Answer retention's options as the loop and rounds hand them to the export and the training job."""
from __future__ import annotations

import json

from connector.export_writer import AnswerPool
from connector.retention import Retention
from training.cli import parser


def test_defaults_reach_the_training_job():
    retention = Retention()
    assert retention.answer_pool() == AnswerPool(ratio=10.0, seed=0) and retention.epochs == 5
    assert not retention.warm_start  # measured: a fresh LoRA keeps answers (docs/retention.md)
    assert "--init-adapter" not in retention.train_args("/runs/round-1/adapter", "rouge_l", 94.5)
    retention = Retention(warm_start=True)
    args = vars(parser().parse_args(["--export", "e", "--base-model", "m", "--out", "o",
                                     *retention.train_args("/runs/round-1/adapter", "rouge_l", 94.5)]))
    assert (args["epochs"], args["init_adapter"], args["select_epoch"], args["select_metric"], args["min_accuracy"],
            args["answer_in_rationale"], args["eval_meteor"]) == (5, "/runs/round-1/adapter", True, "rouge_l", 94.5,
                                                                  True, True)  # the gate's evaluation: METEOR too
    assert "--init-adapter" not in retention.train_args(None, "rouge_l", None)  # round 1: the model as built


def test_each_part_can_be_turned_off():
    off = Retention(answer_in_rationale=False, answer_pool_ratio=0, warm_start=False, epochs=1, select_epoch=False)
    assert off.answer_pool() is None
    args = vars(parser().parse_args(["--export", "e", "--base-model", "m", "--out", "o",
                                     *off.train_args("/runs/round-1/adapter", "rouge_l", None)]))
    assert (args["epochs"], args["init_adapter"], args["select_epoch"], args["answer_in_rationale"]) == (
        1, None, False, False)


def test_the_record_says_what_was_used(tmp_path):
    (tmp_path / "illume_adapter.json").write_text(json.dumps(
        {"answer_in_rationale": True, "init_adapter": "/runs/round-1/adapter", "chosen_epoch": 3,
         "epoch_scores": [{"epoch": 3, "rouge_l": 50.0, "accuracy": 96.0}]}))
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "manifest.json").write_text(json.dumps({"answer_pool": {"source": "project", "drawn": 90}}))
    record = Retention().record(tmp_path, tmp_path / "export")
    assert record["answer_in_rationale"] is True and record["warm_start_from"] == "/runs/round-1/adapter"
    assert record["chosen_epoch"] == 3 and record["answer_pool"]["drawn"] == 90 and record["epochs"] == 5


def test_the_demo_takes_the_retention_options(monkeypatch, tmp_path):
    """`illume-sync demo --warm-start --answer-pool-ratio 3` hands them to the demo's rounds."""
    from click.testing import CliRunner

    import connector.demo
    from connector.cli import main

    seen = []
    monkeypatch.setattr(connector.demo, "run_demo", lambda config, **_: seen.append(config))
    result = CliRunner().invoke(main, ["demo", "--run-dir", str(tmp_path), "--warm-start", "--answer-pool-ratio", "3"])
    assert result.exit_code == 0, result.output
    assert seen[0].retention == Retention(warm_start=True, answer_pool_ratio=3.0)
    assert CliRunner().invoke(main, ["demo", "--run-dir", str(tmp_path)]).exit_code == 0
    assert seen[1].retention == Retention()  # the defaults, as `loop` has them
