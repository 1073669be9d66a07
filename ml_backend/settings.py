"""Everything the backend is configured with, in one plain value."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from illume.images import ImagePolicy
from illume.vlm import DEFAULT_BASE_SHARE, SamplingConfig

if TYPE_CHECKING:
    from illume.labelstudio.client import LabelStudioClient


def setting(default: Any, help: str, env: str, **click: Any) -> Any:
    """A settings field whose --option (named after the field), environment variable and help
    server.py generates from here, so the default is written once."""
    return field(default=default, metadata={"help": help, "env": env, "click": click})


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
    # The backend's Label Studio client: writes candidates into tasks, and is handed to `images`
    # for Label Studio image URLs. None: neither happens.
    label_studio: "LabelStudioClient | None" = None
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
    # "Start training"
    max_training_runs: int = setting(1, "Training runs at once (all projects); a press beyond it is answered "
                                        "with the runs in the way.", "ILLUME_MAX_TRAINING_RUNS", min=1)
    train_answer_s: float = setting(10.0, "Seconds a 'Start training' press waits for the run to name its round "
                                          "(or to fail at once) before it answers.", "ILLUME_TRAIN_ANSWER_S", min=0)
    # Slow clients and slow image hosts
    download_per_host: int = setting(4, "Images downloaded at once from one host (or from Label Studio, or the "
                                        "local disk): a slow host holds at most this many download workers.",
                                     "ILLUME_DOWNLOAD_PER_HOST", min=1)
    header_timeout_s: float = setting(10.0, "Seconds a connection may take to send a request's headers.",
                                      "ILLUME_HEADER_TIMEOUT", min=0.1)
    body_timeout_s: float = setting(15.0, "Seconds allowed between two pieces of a request body.",
                                    "ILLUME_BODY_TIMEOUT", min=0.1)
    keep_alive_s: float = setting(5.0, "Seconds an idle kept-alive connection stays open.", "ILLUME_KEEP_ALIVE",
                                  min=0.1)
    max_connections: int = setting(0, "Open connections at most (0: the open-file limit less 128); past it a new "
                                      "connection closes the one that has waited longest without a request.",
                                   "ILLUME_MAX_CONNECTIONS", min=0)
    decode_side: int | None = setting(None, "Images much larger than this (pixels, shorter side) are decoded "
                                            "reduced, never below it (JPEG draft, else reduce). Default: read "
                                            "from the model's processor; 0: always decode full size.",
                                      "ILLUME_DECODE_SIDE", min=0)

    def __post_init__(self) -> None:
        if self.label_studio is not None:  # the image policy is handed the reader, it builds none
            self.images = dataclasses.replace(self.images, label_studio=self.label_studio)
