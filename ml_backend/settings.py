"""Everything the backend is configured with, in one plain value."""
from __future__ import annotations

from dataclasses import dataclass, field

from illume.images import ImagePolicy
from illume.vlm import SamplingConfig


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
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    batch_size: int = 8  # tasks per model batch
    queue_size: int = 32  # /predict requests waiting or running before 503
    max_tasks_per_request: int = 1000
    # Pre-annotation policy: how many best-scored candidates each prediction pre-ticks. 0 by
    # default: the method asks annotators to select, and pre-ticks left standing would train the
    # model on its own guesses (export counts them per round; `status` shows them).
    preselect: int = 0
    write_candidates: bool = True  # write data.candidates back into Label Studio tasks
    train_command: str | None = None  # run in the background on START_TRAINING
    retry_after_s: int = 5
