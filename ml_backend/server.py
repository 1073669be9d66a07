"""`illume-backend`: serve candidate rationales to Label Studio (uvicorn, one model in memory).

Every option can also be set by an environment variable (shown in --help), so the same
command runs in docker-compose. Example:

    illume-backend --model ./checkpoints/base --adapter ./checkpoints/round-2/adapter \\
        --basic-auth ls:secret --admin-token "$ILLUME_ADMIN_TOKEN" --allowed-roots /data/images
"""
from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os

import click

from illume.errors import IllumeError
from illume.text import MAX_TEXT_CHARS
from illume.images import (DEFAULT_DOWNLOAD_DEADLINE_S, DEFAULT_MAX_ASPECT_RATIO, DEFAULT_MAX_BYTES,
                           DEFAULT_MAX_PIXELS, ImagePolicy, split_list)
from illume.labelstudio.client import LabelStudioClient
from illume.vlm import DEFAULT_BASE_SHARE, SamplingConfig
from ml_backend.settings import Settings

log = logging.getLogger("ml_backend")


def parse_basic_auth(value: str | None) -> tuple[str, str] | None:
    """user:password, else the official ML backend's BASIC_AUTH_USER / BASIC_AUTH_PASS."""
    if not value:
        user, password = os.environ.get("BASIC_AUTH_USER"), os.environ.get("BASIC_AUTH_PASS")
        if bool(user) != bool(password):
            raise click.BadParameter("set both BASIC_AUTH_USER and BASIC_AUTH_PASS, or neither",
                                     param_hint="BASIC_AUTH_USER / BASIC_AUTH_PASS")
        return (user, password) if user else None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise click.BadParameter("expected user:password", param_hint="--basic-auth")
    return user, password


def parse_temperatures(value: str) -> tuple[float, ...]:
    try:
        temperatures = tuple(float(t) for t in split_list(value))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of numbers",
                                 param_hint="--temperatures") from None
    if not temperatures or any(t <= 0 for t in temperatures):
        raise click.BadParameter("give at least one temperature, all above 0", param_hint="--temperatures")
    return temperatures


def generated_settings() -> list[dataclasses.Field]:
    """The Settings fields that carry their own help and environment variable (settings.setting)."""
    return [f for f in dataclasses.fields(Settings) if "env" in f.metadata]


def settings_options(command):
    """One click option per generated setting: --<name>, its env var, default and help from the field."""
    for f in reversed(generated_settings()):
        bounds = f.metadata["click"]
        kind = float if isinstance(f.default, float) else int
        kind = (click.FloatRange if kind is float else click.IntRange)(bounds.get("min"), bounds.get("max"))
        command = click.option(f"--{f.name.replace('_', '-')}", f.name, envvar=f.metadata["env"], default=f.default,
                               type=kind, show_default=f.default is not None, show_envvar=True,
                               help=f.metadata["help"])(command)
    return command


def warn_if_open(host: str, basic_auth: tuple[str, str] | None) -> None:
    """Say loudly when anyone who can reach the port may use the backend."""
    if basic_auth is not None:
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        banner = "!" * 78
        log.warning("\n%s\nNO AUTHENTICATION: the backend listens on %s without --basic-auth, so anyone who can "
                    "reach it may\ncall /predict, /webhook (START_TRAINING runs the training command) and /docs.\n"
                    "Set --basic-auth user:password (ILLUME_BASIC_AUTH) and the same credentials in Label "
                    "Studio's\nML backend settings, or listen on 127.0.0.1 only (--host 127.0.0.1).\n%s",
                    banner, host, banner)


@click.command(context_settings={"show_default": True, "help_option_names": ["-h", "--help"]})
@click.option("--model", envvar="ILLUME_MODEL", required=True, help="Base model: save_pretrained directory or hub id.")
@click.option("--adapter", envvar="ILLUME_ADAPTER", help="LoRA adapter directory trained by the training job.")
@click.version_option(package_name="illume-studio")
@click.option("--model-version", "model_version", envvar="ILLUME_MODEL_VERSION",
              help="Version name to report (default: the adapter's version, else the model's name).")
@click.option("--host", envvar="ILLUME_HOST", default="0.0.0.0")
@click.option("--port", envvar="ILLUME_PORT", default=9090, type=int)
@click.option("--device", envvar="ILLUME_DEVICE", help="cpu, cuda, cuda:1 (default: cuda when available).")
@click.option("--dtype", envvar="ILLUME_DTYPE", help="float32, bfloat16 or float16.")
@click.option("--basic-auth", envvar="ILLUME_BASIC_AUTH",
              help="user:password Label Studio must send (HTTP Basic); BASIC_AUTH_USER + BASIC_AUTH_PASS work too.")
@click.option("--admin-token", envvar="ILLUME_ADMIN_TOKEN", help="Bearer token for POST/GET /reload (off without).")
@click.option("--label-studio-url", envvar="LABEL_STUDIO_URL", help="Where tasks and their images live.")
@click.option("--label-studio-api-key", envvar="LABEL_STUDIO_API_KEY",
              help="Legacy token or personal access token, to read images and write candidates.")
@click.option("--allowed-roots", envvar="ILLUME_ALLOWED_ROOTS", default="",
              help="Comma-separated folders local image paths may be read from.")
@click.option("--allowed-hosts", envvar="ILLUME_ALLOWED_HOSTS", default="",
              help="Comma-separated host or host:port http(s) images may be fetched from "
                   "(a bare host: port 80 for http, 443 for https).")
@click.option("--max-bytes", envvar="ILLUME_MAX_IMAGE_BYTES", default=DEFAULT_MAX_BYTES, type=int)
@click.option("--max-pixels", envvar="ILLUME_MAX_IMAGE_PIXELS", default=DEFAULT_MAX_PIXELS, type=int)
@click.option("--max-aspect-ratio", envvar="ILLUME_MAX_ASPECT_RATIO", default=DEFAULT_MAX_ASPECT_RATIO,
              type=click.FloatRange(1), help="Longest over shortest image side.")
@click.option("--download-deadline", envvar="ILLUME_DOWNLOAD_DEADLINE", default=DEFAULT_DOWNLOAD_DEADLINE_S,
              type=click.FloatRange(0, min_open=True), help="Seconds for one image's whole download.")
@click.option("--download-workers", envvar="ILLUME_DOWNLOAD_WORKERS", default=8, type=click.IntRange(1),
              help="Images downloaded at once.")
@click.option("--max-body-bytes", envvar="ILLUME_MAX_BODY_BYTES", default=16 * 1024 * 1024, type=click.IntRange(1),
              help="Largest request body.")
@click.option("--max-text-chars", envvar="ILLUME_MAX_TEXT_CHARS", default=MAX_TEXT_CHARS, type=click.IntRange(1),
              help="Longest question or answer of a task.")
@click.option("--max-tasks-per-request", envvar="ILLUME_MAX_TASKS_PER_REQUEST", default=1000, type=click.IntRange(1))
@click.option("--predict-timeout", envvar="ILLUME_PREDICT_TIMEOUT", default=100.0,
              type=click.FloatRange(0, min_open=True),
              help="Seconds after which a request's tasks still waiting are dropped (Label Studio's ML_TIMEOUT_PREDICT).")
@click.option("--allow-hub-models", envvar="ILLUME_ALLOW_HUB_MODELS", is_flag=True,
              help="Let /reload load hub ids (network); without it only local directories.")
@click.option("--batch-size", envvar="ILLUME_BATCH_SIZE", default=8, type=click.IntRange(1),
              help="Tasks per model batch (gathered across concurrent requests).")
@click.option("--queue-size", envvar="ILLUME_QUEUE_SIZE", default=2000, type=click.IntRange(1),
              help="Tasks waiting or running (all requests) before /predict answers 503.")
@click.option("--temperatures", envvar="ILLUME_TEMPERATURES", default="0.3,0.8")
@click.option("--per-temperature", envvar="ILLUME_PER_TEMPERATURE", default=5, type=click.IntRange(1))
@click.option("--max-new-tokens", envvar="ILLUME_MAX_NEW_TOKENS", default=100, type=click.IntRange(1))
@click.option("--top-k-fraction", envvar="ILLUME_TOP_K_FRACTION", default=0.1, type=click.FloatRange(0, 1, min_open=True))
@click.option("--seed", envvar="ILLUME_SEED", default=0, type=int)
@click.option("--base-share", envvar="ILLUME_BASE_SHARE", default=DEFAULT_BASE_SHARE, type=click.FloatRange(0, 1),
              show_default=True,
              help="Diversity remedy: with an adapter loaded, this share of each task's candidates (hottest "
                   "temperature first) is sampled with the adapter disabled, i.e. by the model as built; the "
                   "adapter stays unmerged (slower per token, ml_backend/README.md). 0: all from the adapter.")
@click.option("--preselect", envvar="ILLUME_PRESELECT", default=0, type=click.IntRange(0),
              help="Pre-annotation policy: how many best-scored candidates each prediction pre-ticks. "
                   "0 (no pre-ticks) asks annotators to select, as the method does; pre-ticks left "
                   "standing are counted by `illume-sync export` and `status`.")
@click.option("--train-command", envvar="ILLUME_TRAIN_COMMAND",
              help="Run in the background when Label Studio sends START_TRAINING ('Start training'), e.g. "
                   "'illume-sync round --project {project} --run-dir R --base-model M --backend-url URL' "
                   "({project}: the project id from the webhook).")
@click.option("--log-level", envvar="ILLUME_LOG_LEVEL", default="info")
@settings_options
def main(model, adapter, model_version, host, port, device, dtype, basic_auth, admin_token, label_studio_url,
         label_studio_api_key, allowed_roots, allowed_hosts, max_bytes, max_pixels, batch_size, queue_size,
         temperatures, per_temperature, max_new_tokens, top_k_fraction, seed, base_share, preselect, train_command,
         log_level,
         max_aspect_ratio, download_deadline, **limits):
    """Serve Label Studio's ML backend protocol: /health, /setup, /predict, /webhook, plus /reload."""
    import uvicorn

    from ml_backend.app import create_app
    from ml_backend.connections import server_config

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        label_studio = (LabelStudioClient(label_studio_url, label_studio_api_key, ImagePolicy.timeout)
                        if label_studio_url and label_studio_api_key else None)
        images = ImagePolicy(allowed_roots=split_list(allowed_roots), allowed_hosts=split_list(allowed_hosts),
                             max_bytes=max_bytes, max_pixels=max_pixels, max_aspect_ratio=max_aspect_ratio,
                             download_deadline=download_deadline)
    except IllumeError as exc:
        raise click.ClickException(str(exc)) from exc
    limits["predict_timeout_s"] = limits.pop("predict_timeout")  # the generated settings are in limits too
    settings = Settings(
        model=model, adapter=adapter, version=model_version, device=device, dtype=dtype,
        basic_auth=parse_basic_auth(basic_auth), admin_token=admin_token,
        images=images, label_studio=label_studio,
        sampling=SamplingConfig(temperatures=parse_temperatures(temperatures), per_temperature=per_temperature,
                                top_k_fraction=top_k_fraction, max_new_tokens=max_new_tokens, seed=seed,
                                base_share=base_share),
        batch_size=batch_size, queue_size=queue_size, preselect=preselect, train_command=train_command, **limits)
    if settings.label_studio is None:
        log.warning("LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY are not set: candidates cannot be written into "
                    "tasks and Label Studio images cannot be read")
    warn_if_open(host, settings.basic_auth)
    try:
        app = create_app(settings)
    except IllumeError as exc:
        raise click.ClickException(str(exc)) from exc
    uvicorn.Server(server_config(app, settings, host, port, log_level.lower())).run()


if __name__ == "__main__":
    main()
