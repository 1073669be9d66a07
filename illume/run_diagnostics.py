"""What a training run logs per epoch that the connector reads back, without loading torch:
the preference diagnostics (TRL's DPOTrainer names) in the run's eval/epoch_<n>.json."""
from __future__ import annotations

import json
from pathlib import Path

DPO_STATS = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
             "logps/chosen", "logps/rejected")  # TRL's DPOTrainer names, means over the pairs


def preference_diagnostics(eval_dir: str | Path) -> list[dict[str, float]]:
    """Per epoch of a finished run (its eval/epoch_<n>.json): the epoch, the DPO loss and TRL's diagnostics."""
    files = sorted(Path(eval_dir).glob("epoch_*.json"), key=lambda p: int(p.stem.split("_")[1]))
    epochs = [json.loads(p.read_text(encoding="utf-8")) for p in files]
    return [{k: e[k] for k in ("epoch", "dpo_loss", *DPO_STATS, "kl") if k in e} for e in epochs if "dpo_loss" in e]
