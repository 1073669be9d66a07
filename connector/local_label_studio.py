"""Start and stop a local Label Studio server (SQLite, loopback) in its own virtual env.

Label Studio pins Django and many packages, so it lives in a separate virtual environment
(`ILLUME_LS_VENV`, default ~/.cache/illume/label-studio-venv, made by scripts/install.sh).
The demo and the tests use this; teams run Label Studio themselves (docker-compose.yml).
"""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import requests

from illume.errors import IllumeError
from illume.ports import free_port

LABEL_STUDIO_VERSION = "1.23.2"
DEFAULT_VENV = Path(os.environ.get("ILLUME_LS_VENV", Path.home() / ".cache/illume/label-studio-venv"))


def wait_until_healthy(process: subprocess.Popen, healthy: Callable[[], bool], what: str, log: Path,
                       timeout: float) -> None:
    """Poll `healthy` until it answers True; fail early if the process exits, or at the deadline."""
    deadline = time.monotonic() + timeout
    while not healthy():
        if process.poll() is not None:
            raise IllumeError(f"{what} exited with code {process.returncode} while starting", f"See its log: {log}")
        if time.monotonic() > deadline:
            raise IllumeError(f"{what} did not answer within {timeout:.0f} s", f"See its log: {log}")
        time.sleep(0.5)  # readiness poll: nothing proceeds until the server answers


def stop_process_group(process: subprocess.Popen | None, grace: float = 20.0) -> None:
    """SIGTERM the process's group (started with start_new_session), SIGKILL after a grace period."""
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def label_studio_binary(venv: Path = DEFAULT_VENV) -> Path:
    binary = Path(venv) / "bin" / "label-studio"
    if not binary.is_file():
        raise IllumeError(f"Label Studio is not installed in {venv}",
                          "Run `bash scripts/install.sh` (or set ILLUME_LS_VENV to a venv with "
                          f"label-studio=={LABEL_STUDIO_VERSION}).")
    return binary


@dataclass
class LocalLabelStudio:
    """A Label Studio process on 127.0.0.1 with a known admin user and legacy API token."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    username: str = "admin@illume.local"
    password: str = "illume-admin-pw"
    token: str = field(default_factory=lambda: secrets.token_hex(20))
    venv: Path = DEFAULT_VENV
    files_root: Path | None = None  # LOCAL_FILES_DOCUMENT_ROOT (default: data_dir)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            # Let Label Studio call an ML backend on loopback (refused by default since 1.23.1).
            # Both are needed: ML_BLOCK_LOCAL_IP guards the backend's URL, and creating an ML
            # backend also registers a webhook to <backend>/webhook (ml/models.py
            # create_ml_webhook), which SSRF_PROTECTION_ENABLED refuses on a loopback address.
            "ML_BLOCK_LOCAL_IP": "false", "SSRF_PROTECTION_ENABLED": "false",
            # Serve images from local storage under the data dir (import of local folders).
            "LOCAL_FILES_SERVING_ENABLED": "true", "LOCAL_FILES_DOCUMENT_ROOT": str(self.files_root or self.data_dir),
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "false",
            "DJANGO_DB": "sqlite", "LATEST_VERSION_CHECK": "false", "COLLECT_ANALYTICS": "false",
        })
        # Label Studio must not inherit our virtual env's Python path.
        env.pop("PYTHONPATH", None)
        return env

    def start(self, timeout: float = 300.0) -> "LocalLabelStudio":
        """Start the server and wait until it answers (the first start runs migrations, ~1 min)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.data_dir / "label-studio.log"
        command = [str(label_studio_binary(self.venv)), "start", "--no-browser", "--internal-host", "127.0.0.1",
                   "--port", str(self.port), "--data-dir", str(self.data_dir),
                   "--username", self.username, "--password", self.password,
                   "--user-token", self.token, "--enable-legacy-api-token"]
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            env=self.environment(), cwd=self.data_dir, start_new_session=True)
        try:
            wait_until_healthy(self.process, self.healthy, f"Label Studio on {self.url}", log_path, timeout)
        except IllumeError:
            self.stop()
            raise
        return self

    def healthy(self) -> bool:
        try:
            response = requests.get(f"{self.url}/api/projects", timeout=2,
                                    headers={"Authorization": f"Token {self.token}"})
            return response.status_code == 200
        except requests.RequestException:
            return False

    def stop(self) -> None:
        stop_process_group(self.process)
        self.process = None

    def __enter__(self) -> "LocalLabelStudio":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
