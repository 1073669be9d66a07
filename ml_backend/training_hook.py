"""START_TRAINING from Label Studio: hand off to a configured command, never block on it.

The command (ILLUME_TRAIN_COMMAND / --train-command, e.g.
`illume-sync loop --project 3 --iterations 1`) runs in the background in its own process
group. It sees the webhook payload in a JSON file named by ILLUME_WEBHOOK_PAYLOAD and the
project id in ILLUME_PROJECT_ID; its output goes to ILLUME_TRAIN_LOG (default
illume-train.log in the working directory).
"""
from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import tempfile
from typing import Any

from illume.errors import IllumeError

log = logging.getLogger(__name__)


def project_id(payload: dict[str, Any]) -> str:
    project = payload.get("project")
    if isinstance(project, dict):
        project = project.get("id")
    return "" if project is None else str(project)


def start_training(command: str | None, payload: dict[str, Any]) -> subprocess.Popen:
    """Start the training command in the background and return its process."""
    if not command:
        raise IllumeError("Label Studio asked to start training, but no training command is configured",
                          "Start the backend with --train-command (ILLUME_TRAIN_COMMAND), "
                          "e.g. 'illume-sync loop --iterations 1'.")
    with tempfile.NamedTemporaryFile("w", prefix="illume-webhook-", suffix=".json", delete=False) as handle:
        json.dump(payload, handle)
    env = dict(os.environ, ILLUME_WEBHOOK_PAYLOAD=handle.name, ILLUME_PROJECT_ID=project_id(payload))
    log_path = os.environ.get("ILLUME_TRAIN_LOG", "illume-train.log")
    with open(log_path, "ab") as output:
        process = subprocess.Popen(shlex.split(command), stdout=output, stderr=subprocess.STDOUT, env=env,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    log.info("training started: pid %d, command %r, log %s", process.pid, command, log_path)
    return process
