"""The DeepSpeed training job (see training/README.md): `run(TrainConfig(...)) -> TrainResult`."""
from training.config import TrainConfig, TrainResult


def run(config: TrainConfig) -> TrainResult:
    from training.job import run as _run

    return _run(config)


def evaluate(vlm, items, **kwargs) -> dict:
    from training.evaluate import evaluate as _evaluate

    return _evaluate(vlm, items, **kwargs)


__all__ = ["TrainConfig", "TrainResult", "evaluate", "run"]
