"""`illume-backend`: serve candidate rationales to Label Studio (uvicorn, one model in memory).

Every option can also be set by an environment variable (shown in --help), so the same
command runs in docker-compose. Example:

    illume-backend --model ./checkpoints/base --adapter ./checkpoints/round-2/adapter \\
        --basic-auth ls:secret --admin-token "$ILLUME_ADMIN_TOKEN" --allowed-roots /data/images
"""
from __future__ import annotations

import ipaddress
import logging
import os

import click

from illume import options
from illume.errors import IllumeError
from illume.images import (DEFAULT_DOWNLOAD_DEADLINE_S, DEFAULT_MAX_ASPECT_RATIO, DEFAULT_MAX_BYTES,
                           DEFAULT_MAX_PIXELS, ImagePolicy, split_list)
from illume.labelstudio.client import LabelStudioClient
from illume.sampling import PRODUCT_SAMPLING, SamplingConfig
from ml_backend.settings import Settings, parse_basic_auth as settings_basic_auth

log = logging.getLogger("ml_backend")


def parse_basic_auth(value: str | tuple[str, str] | None) -> tuple[str, str] | None:
    """--basic-auth (user:password), else the official ML backend's BASIC_AUTH_USER / BASIC_AUTH_PASS."""
    if value:
        return value if isinstance(value, tuple) else settings_basic_auth(value)
    user, password = os.environ.get("BASIC_AUTH_USER"), os.environ.get("BASIC_AUTH_PASS")
    if bool(user) != bool(password):
        raise click.BadParameter("set both BASIC_AUTH_USER and BASIC_AUTH_PASS, or neither",
                                 param_hint="BASIC_AUTH_USER / BASIC_AUTH_PASS")
    return (user, password) if user else None


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
@click.version_option(package_name="illume-studio")
@options.click_options(Settings)
@options.click_options(SamplingConfig, defaults=PRODUCT_SAMPLING)
@click.option("--host", envvar="ILLUME_HOST", default="0.0.0.0")
@click.option("--port", envvar="ILLUME_PORT", default=9090, type=int)
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
@click.option("--log-level", envvar="ILLUME_LOG_LEVEL", default="info")
def main(host, port, label_studio_url, label_studio_api_key, allowed_roots, allowed_hosts, max_bytes, max_pixels,
         max_aspect_ratio, download_deadline, log_level, **params):
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
        sampling = options.take(SamplingConfig, params)
        params["basic_auth"] = parse_basic_auth(params["basic_auth"])
        settings = options.take(Settings, params, images=images, label_studio=label_studio, sampling=sampling)
    except IllumeError as exc:
        raise click.ClickException(str(exc)) from exc
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
