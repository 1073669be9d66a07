"""Everything the backend is configured with, in one plain value."""
from __future__ import annotations

from dataclasses import dataclass, field

from illume.images import ImagePolicy
from illume.vlm import DEFAULT_BASE_SHARE, SamplingConfig


@dataclass
class Settings:
    model: str
    adapter: str | None = None
    version: str | None = None  # overrides the version derived from the model/adapter
    device: str | None = None
    dtype: str | None = None
    basic_auth: tuple[str, str] | None = None  # (user, password) Label Studio must send
    admin_token: str | None = None  # needed by the reload route; reload is off without it
    images: ImagePolicy = field(default_factory=ImagePolicy)
    # base_share > 0 (the default, as --base-share): adapters stay unmerged so that share of the
    # candidates comes from the model as built (illume.vlm, the diversity remedy)
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(base_share=DEFAULT_BASE_SHARE))
    batch_size: int = 8  # tasks per model batch
    queue_size: int = 2000  # tasks waiting or running (across requests) before /predict answers 503
    max_tasks_per_request: int = 1000
    max_body_bytes: int = 16 * 1024 * 1024  # refused (413) from Content-Length or while streaming in
    max_text_chars: int = 2000  # per question / answer; longer ones fail their task only
    download_workers: int = 8  # the image download pool (not the server's threadpool)
    predict_timeout_s: float = 100.0  # Label Studio's ML_TIMEOUT_PREDICT: tasks still waiting then are dropped
    allow_hub_models: bool = False  # /reload may name hub ids (network lookups); else local directories only
    # Pre-annotation policy: how many best-scored candidates each prediction pre-ticks. 0 by
    # default: the method asks annotators to select, and pre-ticks left standing would train the
    # model on its own guesses (export counts them per round; `status` shows them).
    preselect: int = 0
    write_candidates: bool = True  # write data.candidates back into Label Studio tasks
    train_command: str | None = None  # run in the background on START_TRAINING
    retry_after_s: int = 5
