"""Command line of the training job (argparse, so that the deepspeed launcher's --local_rank passes)."""
from __future__ import annotations

import argparse
import json
import logging
import sys

from illume.errors import IllumeError
from illume.options import add_arguments, take
from training.config import TrainConfig


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("illume-studio")
    except PackageNotFoundError:
        return "not installed"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training", description=(
        "Fine-tune LoRA adapters on an ILLUME export with DeepSpeed (ILLUME loss, optional DPO). "
        "Several processes: deepspeed --num_gpus N --module training ..."))
    add_arguments(p, TrainConfig)  # every option is a TrainConfig field: its default, help and bounds
    p.add_argument("--version", action="version", version=f"%(prog)s (illume-studio {_package_version()})")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> None:
    args = vars(parser().parse_args(argv))
    args.pop("local_rank")  # the launcher also sets LOCAL_RANK in the environment
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from training.extension_lock import check_before_training
    from training.job import run

    try:
        check_before_training()  # a stale torch-extension lock would make the DeepSpeed build wait forever
        result = run(take(TrainConfig, args))
    except IllumeError as exc:  # a problem the user can fix (usage errors exit 2, as argparse does)
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    if result.rank == 0:
        print(json.dumps({"adapter": str(result.adapter_dir), "steps": result.steps, "chosen_epoch": result.chosen_epoch,
                          "metrics": {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))}}))
