"""Every tunable declared once (illume.options): each settings dataclass's fields are the options of
its command and the environment variables, with the field's default; bad values are refused by name."""
from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from connector import cli
from connector.offline_sampling import OfflineJob, launcher_command
from connector.offline_sampling import parser as offline_parser
from connector.promotion import GateSettings
from connector.retention import Retention
from connector.trainer_service import TrainerSettings
from illume import options
from illume.errors import IllumeError
from illume.images import ImagePolicy
from illume.sampling import PRODUCT_SAMPLING, SamplingConfig
from ml_backend import server
from ml_backend.settings import Settings
from illume.listen import Listen
from training.cli import parser as training_parser
from training.config import TrainConfig

# Fields that are not options: values built from options of their own, or objects handed in.
NOT_OPTIONS = {Settings: {"images", "label_studio", "sampling"}, OfflineJob: {"sampling"},
               ImagePolicy: {"label_studio", "timeout", "decode_side"}}
SETTINGS = (Settings, SamplingConfig, ImagePolicy, TrainerSettings, OfflineJob, GateSettings, Retention, TrainConfig,
            Listen)


@pytest.mark.parametrize("cls", SETTINGS, ids=lambda cls: cls.__name__)
def test_every_field_is_a_declared_tunable_with_help(cls):
    names = {f.name for f in options.declared(cls)}
    assert names | NOT_OPTIONS.get(cls, set()) == {f.name for f in dataclasses.fields(cls) if f.init}
    assert all(f.metadata["help"].strip() for f in options.declared(cls))


def parsed(command: click.Command, args: list[str]) -> click.Context:
    """The command's context after parsing `args` (values converted, defaults filled), not run."""
    return command.make_context(command.name, args)


def assert_defaults(cls, values: dict, defaults=None) -> None:
    """Each tunable of `cls` is among the parsed values, with its default (required ones: given)."""
    for f in options.declared(cls):
        assert options.param(f) in values, f.name
        if options.field_default(f) is not dataclasses.MISSING:
            assert values[options.param(f)] == options.field_default(f, defaults), f.name


def test_the_backend_options_are_the_settings_fields_with_their_defaults():
    values = parsed(server.main, ["--model", "m"]).params
    assert_defaults(Settings, values)
    assert_defaults(SamplingConfig, values, PRODUCT_SAMPLING)
    assert_defaults(ImagePolicy, values)
    assert_defaults(Listen, values)
    images, sampling = options.take(ImagePolicy, values), options.take(SamplingConfig, values)
    assert options.take(Settings, values, images=images, sampling=sampling) == Settings(model="m")


def test_predict_and_train_take_the_sampling_gate_and_retention_fields(tmp_path):
    predict = parsed(cli.predict, ["--project", "1"]).params
    assert_defaults(SamplingConfig, predict, PRODUCT_SAMPLING)
    assert options.take(SamplingConfig, predict) == PRODUCT_SAMPLING and predict["preselect"] == 0

    context = parsed(cli.train, ["--export", str(tmp_path), "--base-model", "m", "--out", str(tmp_path / "run")])
    with context:
        gate, retention = cli._gate(**{k: context.params[k] for k in
                                       ("gate_metric", "tolerance", "max_accuracy_drop", "eval_batch_size")}), \
            cli._retention()
    assert gate == GateSettings()
    assert retention == Retention()


def test_the_training_job_options_are_the_config_fields():
    args = vars(training_parser().parse_args(["--export", "e", "--base-model", "b", "--out", "o"]))
    args.pop("local_rank")
    assert options.take(TrainConfig, args) == TrainConfig(export="e", base_model="b", out="o") and args == {}
    flags = vars(training_parser().parse_args(["--export", "e", "--base-model", "b", "--out", "o", "--model-version",
                                               "v1", "--no-select-epoch", "--betas", "0.8,0.9", "--zero", "2"]))
    assert (flags["model_version"], flags["select_epoch"], flags["betas"], flags["zero"]) == ("v1", False, (0.8, 0.9), 2)
    with pytest.raises(SystemExit):
        training_parser().parse_args(["--export", "e", "--base-model", "b", "--out", "o", "--zero", "1"])


def test_offline_sampling_processes_get_the_job_back_from_its_command_line():
    job = OfflineJob("http://ls", 3, "m", version="v2", sampling=dataclasses.replace(PRODUCT_SAMPLING, seed=4))
    command = launcher_command(job, processes=2)
    args = vars(offline_parser().parse_args(command[command.index("--module") + 2:]))
    args.pop("local_rank")
    assert options.take(OfflineJob, args, sampling=options.take(SamplingConfig, args)) == job


def test_environment_variables_override_the_defaults(monkeypatch):
    monkeypatch.setenv("ILLUME_QUEUE_SIZE", "12")
    monkeypatch.setenv("ILLUME_TEMPERATURES", "0.5, 1")
    monkeypatch.setenv("ILLUME_ALLOW_HUB_MODELS", "true")
    monkeypatch.setenv("ILLUME_ALLOWED_HOSTS", "images.example, cdn.example:8443")
    values = parsed(server.main, ["--model", "m"]).params
    assert (values["queue_size"], values["temperatures"], values["allow_hub_models"]) == (12, (0.5, 1.0), True)
    assert values["allowed_hosts"] == ImagePolicy.from_env().allowed_hosts == ["images.example", "cdn.example:8443"]
    assert parsed(server.main, ["--model", "m", "--queue-size", "5"]).params["queue_size"] == 5  # the option wins

    environ = {"ILLUME_TRAIN_COMMAND": "x", "ILLUME_ADMIN_TOKEN": "t", "ILLUME_MAX_TRAINING_RUNS": "2"}
    assert TrainerSettings.from_env(environ) == TrainerSettings(command="x", token="t", max_runs=2)
    assert options.from_env(Settings, {"ILLUME_DECODE_SIDE": "", "ILLUME_BASIC_AUTH": "u:p"}, model="m") == \
        Settings(model="m", basic_auth=("u", "p"))  # empty: unset


@pytest.mark.parametrize("cls, variable, value", [
    (Settings, "ILLUME_QUEUE_SIZE", "many"),
    (Settings, "ILLUME_QUEUE_SIZE", "0"),  # below its bound
    (Settings, "ILLUME_ALLOW_HUB_MODELS", "maybe"),
    (Settings, "ILLUME_BASIC_AUTH", "no-colon"),
    (SamplingConfig, "ILLUME_TEMPERATURES", "0.3,hot"),
    (SamplingConfig, "ILLUME_BASE_SHARE", "1.5"),
    (ImagePolicy, "ILLUME_MAX_IMAGE_BYTES", "20MB"),
    (TrainerSettings, "ILLUME_TRAINER_ANSWER_S", "soon"),
])
def test_bad_environment_values_are_refused_naming_the_variable(cls, variable, value):
    with pytest.raises(IllumeError) as refused:
        options.env_values(cls, {variable: value})
    assert refused.value.what.startswith(f"{variable}={value!r} is not ") and variable in refused.value.todo


def test_a_bad_option_value_is_a_usage_error_naming_the_option():
    result = CliRunner().invoke(server.main, ["--model", "m", "--temperatures", "0,1"])
    assert result.exit_code == 2 and "--temperatures" in result.output and "each above 0" in result.output


def test_importing_the_declarations_loads_no_torch():
    code = "import sys, illume.options, illume.sampling, connector.cli; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_listen_options_for_argparse_commands_keep_defaults_and_bounds():
    parser = options.add_arguments(argparse.ArgumentParser(), Listen)
    assert options.take(Listen, vars(parser.parse_args([]))) == Listen()
    assert options.take(Listen, vars(parser.parse_args(["--port", "9191"]))).port == 9191
    with pytest.raises(SystemExit):
        parser.parse_args(["--port", "0"])
