"""The DeepSpeed training job (see training/README.md): `run(TrainConfig(...)) -> TrainResult`."""
from training.config import TrainConfig, TrainResult


def run(config: TrainConfig) -> TrainResult:
    from training.job import run as _run

    return _run(config)


__all__ = ["TrainConfig", "TrainResult", "run"]
