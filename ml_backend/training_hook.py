"""START_TRAINING from Label Studio ("Start training"): hand off to the configured command,
never block on it.

The command (ILLUME_TRAIN_COMMAND / --train-command) is normally one labeling round:

    illume-sync round --project {project} --run-dir runs/vqa --base-model MODEL \
        --eval-items heldout.jsonl --backend-url http://backend:9090

`{project}` is replaced by the project id from the webhook payload. The command runs in the
background in its own process group, with LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY (the
backend's own Label Studio settings), ILLUME_ADMIN_TOKEN (so the round can reload this
backend), ILLUME_PROJECT / ILLUME_PROJECT_ID and ILLUME_WEBHOOK_PAYLOAD (a JSON file with the
payload) in its environment; its output goes to ILLUME_TRAIN_LOG (default illume-train.log in
the working directory).
"""
from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import tempfile
import threading
from typing import Any, Mapping

from illume.errors import IllumeError

log = logging.getLogger(__name__)
EXAMPLE = "illume-sync round --project {project} --run-dir runs/P --base-model MODEL --backend-url URL"


def project_id(payload: dict[str, Any]) -> str:
    """The payload's project id when it is one (ASCII digits, at most 18), else ""."""
    project = payload.get("project")
    if isinstance(project, dict):
        project = project.get("id")
    if isinstance(project, bool) or not isinstance(project, (int, str)):
        return ""
    project = str(project)
    return project if project.isascii() and project.isdigit() and len(project) <= 18 else ""


def training_argv(command: str, project: str) -> list[str]:
    """The command's arguments with `{project}` filled in (only a numeric project id is accepted)."""
    if "{project}" in command and not project:
        raise IllumeError("Label Studio's START_TRAINING names no usable project (a numeric id)",
                          "Press 'Start training' in the project's Model settings.")
    return [part.replace("{project}", project) for part in shlex.split(command)]


class TrainingRuns:
    """At most one training run per project at a time: pressing "Start training" again while one
    runs (or a client repeating the webhook) must not start a second job on the same run directory."""

    def __init__(self) -> None:
        self._running: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()

    def start(self, command: str | None, payload: dict[str, Any],
              env: Mapping[str, str | None] | None = None) -> subprocess.Popen:
        project = project_id(payload)
        with self._lock:
            earlier = self._running.get(project)
            if earlier is not None and earlier.poll() is None:
                raise IllumeError(f"training for project {project or '(none named)'} is already running as "
                                  f"process {earlier.pid}",
                                  "Wait for it to finish (its log is ILLUME_TRAIN_LOG), then start training again.")
            process = start_training(command, payload, env)
            self._running[project] = process
            return process


def start_training(command: str | None, payload: dict[str, Any],
                   env: Mapping[str, str | None] | None = None) -> subprocess.Popen:
    """Start the training command in the background and return its process. `env`: extra
    variables for it (unset ones are left out)."""
    if not command:
        raise IllumeError("Label Studio asked to start training, but no training command is configured",
                          f"Start the backend with --train-command (ILLUME_TRAIN_COMMAND), e.g. '{EXAMPLE}'.")
    project = project_id(payload)
    argv = training_argv(command, project)
    with tempfile.NamedTemporaryFile("w", prefix="illume-webhook-", suffix=".json", delete=False) as handle:
        json.dump(payload, handle)
    extra = {key: value for key, value in (env or {}).items() if value}
    child_env = dict(os.environ, **extra, ILLUME_WEBHOOK_PAYLOAD=handle.name, ILLUME_PROJECT_ID=project)
    if project:
        child_env["ILLUME_PROJECT"] = project
    log_path = os.environ.get("ILLUME_TRAIN_LOG", "illume-train.log")
    with open(log_path, "ab") as output:
        process = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT, env=child_env,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    log.info("training started: pid %d, command %r, log %s", process.pid, argv, log_path)
    return process
