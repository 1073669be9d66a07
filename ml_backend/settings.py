"""Everything the backend is configured with, in one plain value."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from illume.errors import IllumeError
from illume.images import ImagePolicy
from illume.options import option
from illume.request_guard import body_timeout_option, max_body_option
from illume.sampling import PRODUCT_SAMPLING, SamplingConfig, preselect_option
from illume.text import MAX_TEXT_CHARS
from illume.training_runs import ANSWER_WAIT_S, max_runs_option

if TYPE_CHECKING:
    from illume.labelstudio.client import LabelStudioClient


def parse_basic_auth(text: str) -> tuple[str, str]:
    """--basic-auth / ILLUME_BASIC_AUTH: user:password."""
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise IllumeError(f"expected user:password, got {text!r}", "Pass --basic-auth user:password.")
    return user, password


@dataclass
class Settings:
    """Each tunable is an option of `illume-backend` and an environment variable (illume.options)."""

    model: str = option(help="Base model: save_pretrained directory or hub id.", env="ILLUME_MODEL")
    adapter: str | None = option(None, "LoRA adapter directory trained by the training job.", env="ILLUME_ADAPTER")
    version: str | None = option(None, "Version name to report (default: the adapter's version, else the model's "
                                       "name).", env="ILLUME_MODEL_VERSION", flag="model-version")
    device: str | None = option(None, "cpu, cuda, cuda:1 (default: cuda when available).", env="ILLUME_DEVICE")
    dtype: str | None = option(None, "float32, bfloat16 or float16.", env="ILLUME_DTYPE")
    basic_auth: tuple[str, str] | None = option(None, (
        "user:password Label Studio must send (HTTP Basic); BASIC_AUTH_USER + BASIC_AUTH_PASS work too."),
        env="ILLUME_BASIC_AUTH", parse=parse_basic_auth)
    admin_token: str | None = option(None, "Bearer token for POST/GET /reload (off without).",
                                     env="ILLUME_ADMIN_TOKEN")
    images: ImagePolicy = field(default_factory=ImagePolicy)
    # The backend's Label Studio client: writes candidates into tasks, and is handed to `images`
    # for Label Studio image URLs. None: neither happens.
    label_studio: "LabelStudioClient | None" = None
    # base_share > 0 (the product's default): adapters stay unmerged so that share of the
    # candidates comes from the model as built (illume.sampling, the diversity remedy)
    sampling: SamplingConfig = PRODUCT_SAMPLING
    batch_size: int = option(8, "Tasks per model batch (gathered across concurrent requests).",
                             env="ILLUME_BATCH_SIZE", min=1)
    queue_size: int = option(2000, "Tasks waiting or running (all requests) before /predict answers 503.",
                             env="ILLUME_QUEUE_SIZE", min=1)
    max_tasks_per_request: int = option(1000, "Tasks one /predict request may carry.",
                                        env="ILLUME_MAX_TASKS_PER_REQUEST", min=1)
    max_body_bytes: int = max_body_option()  # the trainer service's too
    max_text_chars: int = option(MAX_TEXT_CHARS, "Longest question or answer of a task (longer ones fail their "
                                                 "task only).", env="ILLUME_MAX_TEXT_CHARS", min=1)
    download_workers: int = option(8, "Images downloaded at once (the download pool, not the server's threads).",
                                   env="ILLUME_DOWNLOAD_WORKERS", min=1)
    predict_timeout_s: float = option(100.0, "Seconds after which a request's tasks still waiting are dropped "
                                             "(Label Studio's ML_TIMEOUT_PREDICT).", env="ILLUME_PREDICT_TIMEOUT",
                                      flag="predict-timeout", min=0, min_open=True)
    allow_hub_models: bool = option(False, "Let /reload load hub ids (network); without it only local directories.",
                                    env="ILLUME_ALLOW_HUB_MODELS")
    preselect: int = preselect_option()
    write_candidates: bool = option(True, "Write data.candidates back into Label Studio tasks.",
                                    env="ILLUME_WRITE_CANDIDATES")
    train_command: str | None = option(None, (
        "Run in the background when Label Studio sends START_TRAINING ('Start training'), e.g. 'illume-sync "
        "round --project {project} --run-dir R --base-model M --backend-url URL' ({project}: the project id "
        "from the webhook)."), env="ILLUME_TRAIN_COMMAND")
    retry_after_s: int = option(5, "Seconds a 503 answer asks Label Studio to wait (Retry-After).",
                                env="ILLUME_RETRY_AFTER", min=0)
    # "Start training"
    max_training_runs: int = max_runs_option()  # the trainer service's too
    train_answer_s: float = option(ANSWER_WAIT_S, "Seconds a 'Start training' press waits for the run to name its round "
                                         "(or to fail at once) before it answers.", env="ILLUME_TRAIN_ANSWER_S", min=0)
    # Slow clients and slow image hosts
    download_per_host: int = option(4, "Images downloaded at once from one host (or from Label Studio, or the "
                                       "local disk): a slow host holds at most this many download workers.",
                                    env="ILLUME_DOWNLOAD_PER_HOST", min=1)
    header_timeout_s: float = option(10.0, "Seconds a connection may take to send a request's headers.",
                                     env="ILLUME_HEADER_TIMEOUT", min=0.1)
    body_timeout_s: float = body_timeout_option()  # the trainer service's too
    keep_alive_s: float = option(5.0, "Seconds an idle kept-alive connection stays open.", env="ILLUME_KEEP_ALIVE",
                                 min=0.1)
    max_connections: int = option(0, "Open connections at most (0: the open-file limit less 128); past it a new "
                                     "connection closes the one that has waited longest without a request.",
                                  env="ILLUME_MAX_CONNECTIONS", min=0)
    decode_side: int | None = option(None, "Images much larger than this (pixels, shorter side) are decoded "
                                           "reduced, never below it (JPEG draft, else reduce). Default: read "
                                           "from the model's processor; 0: always decode full size.",
                                     env="ILLUME_DECODE_SIDE", min=0)

    def __post_init__(self) -> None:
        if self.label_studio is not None:  # the image policy is handed the reader, it builds none
            self.images = dataclasses.replace(self.images, label_studio=self.label_studio)
