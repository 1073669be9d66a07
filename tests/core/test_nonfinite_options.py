"""NaN and infinities are refused wherever a float is declared as an option (illume.options), and a
model whose scores (or the gate's bounds) are not finite is never promoted: NaN passes every `<`."""
from __future__ import annotations

import click
import pytest

from connector import cli
from connector.training_job import gate
from illume import options
from illume.errors import IllumeError
from ml_backend.settings import Settings
from training.cli import parser as training_parser

REQUIRED = ["--export", "e", "--base-model", "m", "--out", "o"]
SERVING = {"rouge_l": 40.0, "accuracy": 96.0}
NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("args", [["--lr", "nan"], ["--lr", "inf"], ["--weight-decay", "nan"], ["--dpo-beta", "inf"],
                                  ["--dpo-weight", "nan"], ["--lora-dropout", "nan"], ["--betas", "nan,nan"],
                                  ["--betas", "0.9,inf"], ["--min-accuracy", "nan"], ["--min-accuracy", "-inf"]])
def test_the_training_job_refuses_non_finite_floats(args, capsys):
    with pytest.raises(SystemExit):
        training_parser().parse_args(REQUIRED + args)
    assert f"argument {args[0]}" in capsys.readouterr().err


@pytest.mark.parametrize("args", [["--tolerance", "nan"], ["--tolerance", "inf"], ["--max-accuracy-drop", "nan"],
                                  ["--max-accuracy-drop", "inf"]])
def test_click_commands_refuse_non_finite_floats_bounded_or_not(args, tmp_path):
    with pytest.raises(click.BadParameter, match="not a finite number"):
        cli.train.make_context("train", ["--export", str(tmp_path), "--base-model", "m", "--out",
                                         str(tmp_path / "run")] + args)
    finite = cli.train.make_context("train", ["--export", str(tmp_path), "--base-model", "m", "--out",
                                              str(tmp_path / "run"), args[0], "1.5"])
    assert finite.params[args[0][2:].replace("-", "_")] == 1.5


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_environment_variables_refuse_non_finite_floats(value):
    with pytest.raises(IllumeError, match="is not a finite number"):
        options.env_values(Settings, {"ILLUME_TRAIN_ANSWER_S": value})


@pytest.mark.parametrize("new", [{"rouge_l": NAN, "accuracy": NAN}, {"rouge_l": NAN, "accuracy": 96.0},
                                 {"rouge_l": 50.0, "accuracy": NAN}, {"rouge_l": INF, "accuracy": 96.0}])
def test_a_model_with_non_finite_scores_is_never_promoted(new):
    decision = gate(new, SERVING, "rouge_l")
    assert not decision.promote and "new model's" in decision.reason and "not a finite number" in decision.reason


def test_non_finite_references_or_bounds_promote_nothing():
    good = {"rouge_l": 50.0, "accuracy": 96.0}
    assert not gate(good, {"rouge_l": NAN, "accuracy": 96.0}, "rouge_l").promote
    assert not gate(good, SERVING, "rouge_l", baseline={"rouge_l": 40.0, "accuracy": NAN}).promote
    for tolerance in (NAN, INF):
        decision = gate({"rouge_l": 0.0, "accuracy": 96.0}, SERVING, "rouge_l", tolerance=tolerance)
        assert not decision.promote and "tolerance is" in decision.reason
    decision = gate({"rouge_l": 90.0, "accuracy": 0.0}, SERVING, "rouge_l", max_accuracy_drop=NAN)
    assert not decision.promote and "max accuracy drop is nan" in decision.reason
    assert gate(good, SERVING, "rouge_l").promote
