"""The trainer service: "Start training" runs on the training machine, not in the serving backend.

Wiring (docker-compose.yml): Label Studio's button sends START_TRAINING to the backend's /webhook,
as for any ML backend; the backend's training command is `python -m connector.trainer_service
forward`, which posts that same payload to this service (ILLUME_TRAINER_URL, bearer
ILLUME_ADMIN_TOKEN) and prints its answer. Here the payload starts ILLUME_TRAIN_COMMAND (normally
`illume-sync round ...`, which writes its run under a writable runs volume and reloads the backend)
through the backend's own run keeper (illume.training_runs.TrainingRuns): one run per project,
an answer sentence per press, GET /training with the exit codes and log tails.

Why this way: Label Studio only talks to the ML backend, whose webhook already answers presses;
forwarding keeps the backend a server with read-only model and run mounts and no GPU, and the
trainer needs no Label Studio-facing address. The forwarder prints the trainer's round as
"round N: ... of project P", the line the backend's answer names the round from.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, fields
from typing import Any

from fastapi import FastAPI, HTTPException, Request  # module level: FastAPI resolves the annotations here

from illume.errors import IllumeError
from illume import options
from illume.listen import Listen
from illume.options import from_env, option
from illume.records import read_json_object
from illume.request_guard import RequestGuard, body_timeout_option, max_body_option
from illume.training_runs import max_runs_option

TOKEN_ENV = "ILLUME_ADMIN_TOKEN"


@dataclass(frozen=True)
class TrainerSettings:
    """Read from the environment (illume.options): the trainer runs in a container."""

    command: str = option("", (
        "what a press runs, `{project}` replaced by the project id, e.g. illume-sync round --project {project} "
        "--run-dir /runs/project-{project} --base-model /models/M --backend-url http://ml-backend:9090"),
        env="ILLUME_TRAIN_COMMAND")
    token: str = option("", "bearer token the backend's forwarder sends (the backend's admin token; required)",
                        env=TOKEN_ENV)
    answer_wait_s: float = option(8.0, "seconds a press waits for the run to name its round; keep it below the "
                                       "backend's ILLUME_TRAIN_ANSWER_S", env="ILLUME_TRAINER_ANSWER_S", min=0)
    max_runs: int = max_runs_option()  # the backend's setting, same variable
    max_body_bytes: int = max_body_option()  # the backend's too: a forwarded payload is one it took
    body_timeout_s: float = body_timeout_option()

    @classmethod
    def from_env(cls, environ=None) -> "TrainerSettings":
        """The settings the environment gives; IllumeError for a bad value or a missing required one."""
        settings = from_env(cls, environ)
        for name in ("command", "token"):
            spec = cls.__dataclass_fields__[name]
            if not getattr(settings, name):
                variable = spec.metadata["env"]
                raise IllumeError(f"the trainer needs {variable}", f"Set {variable}: {spec.metadata['help']}.")
        return settings


def create_app(settings: TrainerSettings):
    """The trainer's HTTP face: POST /webhook (a forwarded START_TRAINING), GET /training, GET /health.

    Every route but /health needs the bearer token, checked (with the body's size) before a body is read."""
    from illume.training_runs import TrainingRuns

    runs = TrainingRuns(settings.max_runs, settings.answer_wait_s)
    app = FastAPI(title="ILLUME trainer")
    app.add_middleware(RequestGuard, basic_auth=None, admin_token=settings.token, admin_paths=None,
                       max_body_bytes=settings.max_body_bytes, body_timeout_s=settings.body_timeout_s)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "UP", "running": len(runs.running())}

    @app.post("/webhook")
    async def webhook(request: Request) -> dict[str, Any]:
        try:
            payload = json.loads(await request.body())
        except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested beyond the parser
            raise HTTPException(400, "the body is not a JSON object: send Label Studio's START_TRAINING payload, "
                                     "as the backend's forwarder does") from None
        if not isinstance(payload, dict) or payload.get("action") != "START_TRAINING":
            return {"status": "ignored", "detail": "only START_TRAINING starts anything here"}
        answer = runs.start(settings.command, payload)
        return {"status": answer.status, "detail": answer.message,
                "round": answer.run.round if answer.run is not None else None}

    @app.get("/training")
    def training() -> dict[str, Any]:
        return runs.status()

    app.state.training_runs = runs
    return app


def forward(url: str, token: str, payload: dict[str, Any], timeout_s: float = 60.0) -> tuple[bool, str]:
    """Post a START_TRAINING payload to the trainer; (started, the line to print)."""
    import requests

    from illume.training_runs import project_id

    try:
        response = requests.post(f"{url.rstrip('/')}/webhook", json=payload, timeout=timeout_s,
                                 headers={"Authorization": f"Bearer {token}"})
    except requests.RequestException as exc:
        return False, (f"the trainer at {url} cannot be reached ({type(exc).__name__}); start it "
                       "(docker compose --profile gpu up -d trainer) and press again")
    if response.status_code != 200:
        return False, f"the trainer at {url} answered HTTP {response.status_code}: {response.text[:300]}"
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        return False, f"the trainer at {url} answered something other than a JSON object: {response.text[:300]!r}"
    detail = answer.get("detail", "")
    if answer.get("status") != "started":
        return False, f"the trainer did not start: {detail}"
    project = project_id(payload)
    if answer.get("round") is not None and project:  # illume.training_runs.ROUND_LINE
        return True, f"round {answer['round']}: handed to the trainer at {url} for the training of project {project}: {detail}"
    return True, f"handed to the trainer at {url}: {detail}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m connector.trainer_service", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the trainer (settings from the environment: "
                                + ", ".join(f.metadata["env"] for f in fields(TrainerSettings)) + ")")
    options.add_arguments(serve, Listen)
    commands.add_parser("forward", help="the backend's training command: hand its START_TRAINING to "
                        "ILLUME_TRAINER_URL (payload from ILLUME_WEBHOOK_PAYLOAD)")
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            import uvicorn

            listen = options.take(Listen, vars(args))
            uvicorn.run(create_app(TrainerSettings.from_env()), host=listen.host, port=listen.port,
                        log_level=listen.log_level)
            return
        url, token = os.environ.get("ILLUME_TRAINER_URL"), os.environ.get(TOKEN_ENV, "")
        if not url:
            raise IllumeError("ILLUME_TRAINER_URL is not set", "Set it to the trainer's address, e.g. http://trainer:9090.")
        payload_file = os.environ.get("ILLUME_WEBHOOK_PAYLOAD")
        if not payload_file:
            raise IllumeError("ILLUME_WEBHOOK_PAYLOAD is not set (the backend sets it for its training command)",
                              "Run this as the backend's --train-command, not by hand.")
        payload = read_json_object(payload_file, "Run this as the backend's --train-command, which writes the file.")
        started, line = forward(url, token, payload, TrainerSettings.answer_wait_s + 30)
        print(line, flush=True)
        raise SystemExit(0 if started else 1)
    except IllumeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
