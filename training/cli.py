"""Command line of the training job (argparse, so that the deepspeed launcher's --local_rank passes)."""
from __future__ import annotations

import argparse
import json
import logging
import sys

from illume.errors import IllumeError
from training.config import TrainConfig
from training.losses import PREFERENCE_LOSSES


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
    d = TrainConfig.__dataclass_fields__
    p.add_argument("--export", required=True, help="export directory (rows.jsonl, preferences.jsonl, manifest.json)")
    p.add_argument("--base-model", required=True, help="base model directory or Hugging Face id")
    p.add_argument("--out", required=True, help="run directory: checkpoints/, adapter/, eval/")
    p.add_argument("--eval-items", help="held-out items (JSONL of illume.records.Item), evaluated after each epoch")
    p.add_argument("--eval-batch-size", type=int, default=d["eval_batch_size"].default,
                   help="held-out items per generate call when evaluating (lower it when memory is short)")
    p.add_argument("--epochs", type=int, default=d["epochs"].default)
    p.add_argument("--batch-size", type=int, default=d["batch_size"].default, help="micro batch per process")
    p.add_argument("--grad-accum", type=int, default=d["grad_accum"].default, help="micro batches per optimizer step")
    p.add_argument("--lr", type=float, default=d["lr"].default)
    p.add_argument("--weight-decay", type=float, default=d["weight_decay"].default)
    p.add_argument("--warmup-steps", type=int, default=d["warmup_steps"].default, help="linear warm-up, then linear decay")
    p.add_argument("--seed", type=int, default=d["seed"].default)
    p.add_argument("--zero", type=int, choices=(0, 2, 3), default=d["zero"].default, help="ZeRO stage (training/ds_zero<N>.json)")
    p.add_argument("--deepspeed-config", help="a DeepSpeed JSON config used instead of training/ds_zero<N>.json")
    p.add_argument("--offload", action="store_true", help="keep optimizer states (ZeRO 3: also parameters) in CPU memory")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when present, else cpu")
    p.add_argument("--dpo", action="store_true", help="add the DPO loss on preferences.jsonl (weight 1 unless --dpo-weight)")
    p.add_argument("--dpo-weight", type=float, default=d["dpo_weight"].default,
                   help="loss = ILLUME + W x DPO on (accepted, unticked) pairs of the same item; W > 0 implies --dpo")
    p.add_argument("--dpo-beta", type=float, default=d["dpo_beta"].default)
    p.add_argument("--preference-loss", choices=PREFERENCE_LOSSES, default=d["preference_loss"].default,
                   help="the preference part: dpo (sigmoid) or ipo (squared margin); training/losses.py")
    p.add_argument("--dpo-label-smoothing", type=float, default=d["dpo_label_smoothing"].default,
                   help="conservative DPO: the share of pairs assumed mislabelled (0: plain DPO)")
    p.add_argument("--dpo-length-norm", action=argparse.BooleanOptionalAction, default=d["dpo_length_norm"].default,
                   help="mean token log-probabilities in the preference loss instead of sums (measured better)")
    p.add_argument("--pair-batch-size", type=int, default=d["pair_batch_size"].default,
                   help="preference pairs per micro-batch (0: --batch-size); raise it to see more pairs per epoch")
    p.add_argument("--lora-rank", type=int, default=d["lora_rank"].default)
    p.add_argument("--lora-alpha", type=int, default=d["lora_alpha"].default)
    p.add_argument("--train-projector", action="store_true", help="LoRA on the vision-to-text projector as well")
    p.add_argument("--checkpoint-every", type=int, default=d["checkpoint_every"].default, help="optimizer steps between checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in <out>/checkpoints")
    p.add_argument("--model-version", dest="version",
                   help="model version name stored with the adapter (default: the --out directory's name)")
    p.add_argument("--version", action="version", version=f"%(prog)s (illume-studio {_package_version()})")
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    p.add_argument("--answer-in-rationale", action=argparse.BooleanOptionalAction,
                   default=d["answer_in_rationale"].default, help=d["answer_in_rationale"].metadata["help"])
    p.add_argument("--init-adapter", help=d["init_adapter"].metadata["help"])
    p.add_argument("--select-epoch", action=argparse.BooleanOptionalAction, default=d["select_epoch"].default,
                   help=d["select_epoch"].metadata["help"])
    p.add_argument("--select-metric", default=d["select_metric"].default, help=d["select_metric"].metadata["help"])
    p.add_argument("--min-accuracy", type=float, help=d["min_accuracy"].metadata["help"])
    p.add_argument("--eval-meteor", action=argparse.BooleanOptionalAction, default=d["eval_meteor"].default,
                   help=d["eval_meteor"].metadata["help"])
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
        result = run(TrainConfig(**args))
    except IllumeError as exc:  # a problem the user can fix (usage errors exit 2, as argparse does)
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    if result.rank == 0:
        print(json.dumps({"adapter": str(result.adapter_dir), "steps": result.steps, "chosen_epoch": result.chosen_epoch,
                          "metrics": {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))}}))
