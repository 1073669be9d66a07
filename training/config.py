"""The job's settings as plain values (one dataclass), and what a finished run returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from illume.errors import IllumeError
from illume.layout import RUN_ADAPTER, RUN_CHECKPOINTS, RUN_EPOCHS, RUN_EVAL, RUN_RANKS
from illume.evaluation import BATCH_SIZE as EVAL_BATCH_SIZE


@dataclass
class TrainConfig:
    export: str  # export directory: rows.jsonl, preferences.jsonl, manifest.json
    base_model: str  # save_pretrained directory or Hugging Face id
    out: str  # run directory: checkpoints/, adapter/, eval/, ranks/
    eval_items: str | None = None  # JSONL of illume.records.Item (held out)
    epochs: int = 1
    batch_size: int = 8  # micro batch per rank
    grad_accum: int = 1
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.2
    warmup_steps: int = 0
    seed: int = 0
    zero: int = 0  # ZeRO stage: 0, 2 or 3
    deepspeed_config: str | None = None  # a JSON file replacing training/ds_zero<stage>.json
    offload: bool = False  # optimizer (and for ZeRO 3 parameter) states in CPU memory
    device: str | None = None  # "cpu" or "cuda"; None picks cuda when present
    dpo: bool = False  # add the DPO loss on preferences.jsonl (alone: dpo_weight 1)
    dpo_weight: float = 0.0  # loss = ILLUME + dpo_weight * DPO; > 0 turns dpo on
    # The preference loss's shape: length-normalised DPO at beta 0.5 measured best on the data-efficiency
    # benchmark's cached feedback (README); summed DPO at beta 0.1 is --no-dpo-length-norm --dpo-beta 0.1.
    dpo_beta: float = 0.5
    preference_loss: str = "dpo"  # training.losses.PREFERENCE_LOSSES
    dpo_label_smoothing: float = 0.0  # conservative DPO: the share of pairs assumed mislabelled
    dpo_length_norm: bool = True  # mean token log-probabilities instead of sums
    pair_batch_size: int = 0  # pairs per micro-batch (0: --batch-size)
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    train_projector: bool = False  # LoRA on the vision-to-text projector too
    checkpoint_every: int = 0  # optimizer steps between DeepSpeed checkpoints (0: only at the end)
    resume: bool = False
    version: str | None = None  # model_version name written next to the adapter
    max_steps: int | None = None  # stop after this many optimizer steps
    eval_max_new_tokens: int = 40
    eval_batch_size: int = EVAL_BATCH_SIZE  # held-out items per generate call
    eval_meteor: bool = field(default=True, metadata={"help": (
        "METEOR in the held-out evaluation (it starts a JVM per evaluation: seconds; off when the epoch is "
        "chosen by another metric)")})
    log_every: int = 10
    # Answer retention (issue 22), each as the method has it by default.
    answer_in_rationale: bool = field(default=True, metadata={"help": (
        "rationale rows learn the answer too: the target is ' {answer}, seeing that {rationale}' after the "
        "question, as the method trains (off: the answer stays in the prompt, only the rationale is learned)")})
    init_adapter: str | None = field(default=None, metadata={"help": (
        "warm start: continue training this adapter (e.g. the one served now) instead of a fresh LoRA; "
        "its own LoRA settings (rank, alpha, targets) apply")})
    select_epoch: bool = field(default=True, metadata={"help": (
        "with --eval-items: keep the epoch with the best --select-metric among those whose accuracy is at "
        "least --min-accuracy (none: the most accurate), as the method picks its checkpoint; off: the last epoch")})
    select_metric: str = field(default="rouge_l", metadata={"help": "held-out metric that chooses the epoch "
                                                                      "(the promotion gate's)"})
    min_accuracy: float | None = field(default=None, metadata={"help": (
        "held-out answer accuracy (0-100) an epoch needs to be chosen, e.g. the promotion gate's floor")})

    def __post_init__(self) -> None:
        if self.dpo_weight < 0:
            raise IllumeError(f"--dpo-weight must not be negative, got {self.dpo_weight}",
                              "Pass 0 (no preference loss) or a positive weight.")
        from training.losses import PREFERENCE_LOSSES

        if self.preference_loss not in PREFERENCE_LOSSES:
            raise IllumeError(f"--preference-loss must be one of {', '.join(PREFERENCE_LOSSES)}, got "
                              f"{self.preference_loss!r}", "Pass dpo, ipo or kto.")
        if not 0 <= self.dpo_label_smoothing < 0.5:
            raise IllumeError(f"--dpo-label-smoothing must be in [0, 0.5), got {self.dpo_label_smoothing}",
                              "Pass 0 (plain DPO) or the share of pairs you expect to be mislabelled, e.g. 0.1.")
        if self.dpo_beta <= 0 or self.pair_batch_size < 0:
            raise IllumeError(f"--dpo-beta must be positive and --pair-batch-size not negative, got "
                              f"{self.dpo_beta} and {self.pair_batch_size}", "Pass e.g. --dpo-beta 0.1.")
        if self.dpo and not self.dpo_weight:
            self.dpo_weight = 1.0
        self.dpo = self.dpo_weight > 0

    @property
    def out_dir(self) -> Path:
        return Path(self.out)

    @property
    def checkpoint_dir(self) -> Path:
        return self.out_dir / RUN_CHECKPOINTS

    @property
    def adapter_dir(self) -> Path:
        return self.out_dir / RUN_ADAPTER

    @property
    def epochs_dir(self) -> Path:
        return self.out_dir / RUN_EPOCHS

    @property
    def eval_dir(self) -> Path:
        return self.out_dir / RUN_EVAL

    @property
    def ranks_dir(self) -> Path:
        return self.out_dir / RUN_RANKS


@dataclass
class TrainResult:
    adapter_dir: Path
    metrics: dict[str, Any]  # of the chosen (else the last) epoch: held-out metrics (with eval items), mean losses, DPO diagnostics
    steps: int  # optimizer steps taken in total (resumed runs included)
    losses: list[float] = field(default_factory=list)  # loss per optimizer step of this process
    samples_per_second: float = 0.0
    peak_rss_mb: float = 0.0
    rank: int = 0
    micro_seconds: list[float] = field(default_factory=list)  # wall time of each micro-batch (benchmarks)
    chosen_epoch: int | None = None  # the epoch whose adapter was kept (None: no epoch was chosen)
