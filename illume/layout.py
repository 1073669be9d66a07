"""The names of the files and folders that pass between processes, one place for writer and
reader: the export directory (connector -> training job), a training run's directory (training
job -> connector), the adapter directory (training job -> backend, connector) and the run
directory of `illume-sync loop` / `round` (one folder per round)."""
from __future__ import annotations

from pathlib import Path

# The export directory: what `illume-sync export` writes and `training` reads.
EXPORT_ROWS = "rows.jsonl"  # TrainingRow, both kinds
EXPORT_PAIRS = "preferences.jsonl"  # PreferencePair
EXPORT_UNTICKED = "unticked.jsonl"  # candidates nobody ticked, in rows.jsonl's layout (rationale rows)
EXPORT_FEEDBACK = "feedback.jsonl"  # Feedback, one per completed item
EXPORT_MANIFEST = "manifest.json"  # counts, rationale_weight, sha256 per file, annotation ids
EXPORT_IMAGES = "images"  # the images the rows name, copied in (rows name them relative to the export)
EXPORT_TRL_SFT = "sft.jsonl"  # TRL's conversational SFT layout (prompt/completion)
EXPORT_TRL_UNPAIRED = "unpaired.jsonl"  # TRL's unpaired preference layout (KTO: prompt/completion/label)

# A training run's directory (the job's --out).
RUN_ADAPTER = "adapter"  # the chosen (else the last) epoch's adapter
RUN_CHECKPOINTS = "checkpoints"  # DeepSpeed checkpoints, for --resume
RUN_EPOCHS = "epochs"  # epoch_<n>/: each epoch's adapter while the epoch choice is open
RUN_EVAL = "eval"  # epoch_<n>.json: held-out metrics, losses and DPO diagnostics per epoch
RUN_RANKS = "ranks"  # per-process results
TRAIN_LOG = "train.log"  # the job's output, kept by the connector beside the run

# The adapter directory.
ADAPTER_META = "illume_adapter.json"  # written next to a trained adapter (training job)

# The run directory of `loop` and `round` (connector.round_step): the state file and one folder per round.
RUN_STATE = "rounds.json"  # the rounds (connector.round_step.RoundRecord), the model served, the tasks trained on
LEGACY_LOOP_STATE = "loop.json"  # what loops kept before rounds.json: still read where no rounds.json is
ROUND_LOCK = ".round.lock"  # held while a round runs in the directory
ROUND_PREFIX = "round-"
ROUND_EXPORT = "export"  # a round's export directory
ROUND_TRAIN = "train"  # a round's training run directory
PROMOTION_RECORD = "promotion.json"  # the gate's decision, in the folder of what it judged
PENDING_RELOAD = "pending_reload.json"  # a backend reload asked for and not yet seen through


def round_path(run_dir: str | Path, number: int) -> Path:
    return Path(run_dir) / f"{ROUND_PREFIX}{number}"
