"""The DeepSpeed training job (see training/README.md): `run(TrainConfig(...)) -> TrainResult`."""
from training.config import TrainConfig, TrainResult


def run(config: TrainConfig) -> TrainResult:
    from training.job import run as _run

    return _run(config)


# Imported eagerly: a lazy wrapper named `evaluate` would be replaced by the submodule
# training.evaluate as soon as anything imports that submodule.
from training.evaluate import evaluate  # noqa: E402


__all__ = ["TrainConfig", "TrainResult", "evaluate", "run"]
