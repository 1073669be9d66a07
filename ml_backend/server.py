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
from illume.images import ImagePolicy
from illume.labelstudio.client import LabelStudioClient
from illume.listen import Listen
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
@options.click_options(ImagePolicy)
@options.click_options(Listen)
@click.option("--label-studio-url", envvar="LABEL_STUDIO_URL", help="Where tasks and their images live.")
@click.option("--label-studio-api-key", envvar="LABEL_STUDIO_API_KEY",
              help="Legacy token or personal access token, to read images and write candidates.")
def main(label_studio_url, label_studio_api_key, **params):
    """Serve Label Studio's ML backend protocol: /health, /setup, /predict, /webhook, plus /reload."""
    import uvicorn

    from ml_backend.app import create_app
    from ml_backend.connections import server_config

    listen = options.take(Listen, params)
    logging.basicConfig(level=listen.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        label_studio = (LabelStudioClient(label_studio_url, label_studio_api_key, ImagePolicy.timeout)
                        if label_studio_url and label_studio_api_key else None)
        images, sampling = options.take(ImagePolicy, params), options.take(SamplingConfig, params)
        params["basic_auth"] = parse_basic_auth(params["basic_auth"])
        settings = options.take(Settings, params, images=images, label_studio=label_studio, sampling=sampling)
    except IllumeError as exc:
        raise click.ClickException(str(exc)) from exc
    if settings.label_studio is None:
        log.warning("LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY are not set: candidates cannot be written into "
                    "tasks and Label Studio images cannot be read")
    warn_if_open(listen.host, settings.basic_auth)
    try:
        app = create_app(settings)
    except IllumeError as exc:
        raise click.ClickException(str(exc)) from exc
    uvicorn.Server(server_config(app, settings, listen.host, listen.port, listen.log_level)).run()


if __name__ == "__main__":
    main()
