"""The job's settings as plain values (one dataclass), and what a finished run returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from illume.errors import IllumeError
from illume.layout import RUN_ADAPTER, RUN_CHECKPOINTS, RUN_EPOCHS, RUN_EVAL, RUN_RANKS
from illume.evaluation import BATCH_SIZE as EVAL_BATCH_SIZE
from illume.options import option
from training.losses import PREFERENCE_LOSSES


@dataclass
class TrainConfig:
    """The job's settings; each field is an option of `python -m training` (illume.options)."""

    export: str = option(help="export directory (rows.jsonl, preferences.jsonl, manifest.json)")
    base_model: str = option(help="base model directory or Hugging Face id")
    out: str = option(help="run directory: checkpoints/, adapter/, eval/")
    eval_items: str | None = option(None, "held-out items (JSONL of illume.records.Item), evaluated after each epoch")
    epochs: int = option(1, "training epochs", min=1)
    batch_size: int = option(8, "micro batch per process", min=1)
    grad_accum: int = option(1, "micro batches per optimizer step", min=1)
    lr: float = option(1e-3, "learning rate", min=0, min_open=True)
    betas: tuple[float, float] = option((0.9, 0.99), "AdamW betas, comma-separated", min=0, max=1)
    weight_decay: float = option(0.2, "AdamW weight decay", min=0)
    warmup_steps: int = option(0, "linear warm-up, then linear decay", min=0)
    seed: int = option(0, "random seed (LoRA init, data order, held-out sampling)")
    zero: int = option(0, "ZeRO stage (training/ds_zero<N>.json)", choices=(0, 2, 3))
    deepspeed_config: str | None = option(None, "a DeepSpeed JSON config used instead of training/ds_zero<N>.json")
    offload: bool = option(False, "keep optimizer states (ZeRO 3: also parameters) in CPU memory")
    device: str | None = option(None, "default: cuda when present, else cpu", choices=("cpu", "cuda"))
    dpo: bool = option(False, "add the DPO loss on preferences.jsonl (weight 1 unless --dpo-weight)")
    dpo_weight: float = option(0.0, "loss = ILLUME + W x DPO on (accepted, unticked) pairs of the same item; "
                                    "W > 0 implies --dpo", min=0)
    # The preference loss's shape: length-normalised DPO at beta 0.5 measured best on the data-efficiency
    # benchmark's cached feedback (README); summed DPO at beta 0.1 is --no-dpo-length-norm --dpo-beta 0.1.
    dpo_beta: float = option(0.5, "the preference loss's beta", min=0, min_open=True)
    preference_loss: str = option("dpo", "the preference part: dpo (sigmoid), ipo (squared margin) or kto "
                                         "(unpaired); training/losses.py", choices=PREFERENCE_LOSSES)
    dpo_label_smoothing: float = option(0.0, "conservative DPO: the share of pairs assumed mislabelled (0: plain DPO)",
                                        min=0)
    dpo_length_norm: bool = option(True, "mean token log-probabilities in the preference loss instead of sums "
                                         "(measured better)")
    pair_batch_size: int = option(0, "preference pairs per micro-batch (0: --batch-size); raise it to see more "
                                     "pairs per epoch", min=0)
    lora_rank: int = option(8, "LoRA rank", min=1)
    lora_alpha: int = option(16, "LoRA alpha", min=1)
    lora_dropout: float = option(0.0, "LoRA dropout", min=0, max=1)
    train_projector: bool = option(False, "LoRA on the vision-to-text projector as well")
    checkpoint_every: int = option(0, "optimizer steps between DeepSpeed checkpoints (0: only at the end)", min=0)
    resume: bool = option(False, "continue from the last checkpoint in <out>/checkpoints")
    version: str | None = option(None, "model version name stored with the adapter (default: the --out "
                                       "directory's name)", flag="model-version")
    max_steps: int | None = option(None, "stop after this many optimizer steps", min=1)
    eval_max_new_tokens: int = option(40, "longest generated rationale in the held-out evaluation (tokens)", min=1)
    eval_batch_size: int = option(EVAL_BATCH_SIZE, "held-out items per generate call when evaluating (lower it "
                                                   "when memory is short)", min=1)
    eval_meteor: bool = option(True, (
        "METEOR in the held-out evaluation (it starts a JVM per evaluation: seconds; off when the epoch is "
        "chosen by another metric)"))
    log_every: int = option(10, "optimizer steps between log lines", min=1)
    # Answer retention (issue 22), each as the method has it by default.
    answer_in_rationale: bool = option(True, (
        "rationale rows learn the answer too: the target is ' {answer}, seeing that {rationale}' after the "
        "question, as the method trains (off: the answer stays in the prompt, only the rationale is learned)"))
    init_adapter: str | None = option(None, (
        "warm start: continue training this adapter (e.g. the one served now) instead of a fresh LoRA; "
        "its own LoRA settings (rank, alpha, targets) apply"))
    select_epoch: bool = option(True, (
        "with --eval-items: keep the epoch with the best --select-metric among those whose accuracy is at "
        "least --min-accuracy (none: the most accurate), as the method picks its checkpoint; off: the last epoch"))
    select_metric: str = option("rouge_l", "held-out metric that chooses the epoch (the promotion gate's)")
    min_accuracy: float | None = option(None, (
        "held-out answer accuracy (0-100) an epoch needs to be chosen, e.g. the promotion gate's floor"))

    def __post_init__(self) -> None:
        if self.dpo_weight < 0:
            raise IllumeError(f"--dpo-weight must not be negative, got {self.dpo_weight}",
                              "Pass 0 (no preference loss) or a positive weight.")
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
