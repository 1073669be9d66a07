"""Start and stop a local Label Studio server (SQLite, loopback) in its own virtual env.

Label Studio pins Django and many packages, so it lives in a separate virtual environment
(`ILLUME_LS_VENV`, default ~/.cache/illume/label-studio-venv, made by scripts/install.sh).
The demo and the tests use this; teams run Label Studio themselves (docker-compose.yml).
"""
from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from illume.errors import IllumeError

LABEL_STUDIO_VERSION = "1.23.2"
DEFAULT_VENV = Path(os.environ.get("ILLUME_LS_VENV", Path.home() / ".cache/illume/label-studio-venv"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise IllumeError(f"Label Studio exited with code {self.process.returncode} while starting",
                                  f"See its log: {log_path}")
            if self.healthy():
                return self
            time.sleep(1.0)  # readiness poll, not a race: nothing proceeds until /health answers
        self.stop()
        raise IllumeError(f"Label Studio did not answer on {self.url} within {timeout:.0f} s", f"See its log: {log_path}")

    def healthy(self) -> bool:
        try:
            response = requests.get(f"{self.url}/api/projects", timeout=2,
                                    headers={"Authorization": f"Token {self.token}"})
            return response.status_code == 200
        except requests.RequestException:
            return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()
        self.process = None

    def __enter__(self) -> "LocalLabelStudio":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def copy_data_dir(template: Path, target: Path) -> None:
    """Reuse a migrated data dir (saves the minute of migrations on each fresh server)."""
    shutil.copytree(template, target, ignore=shutil.ignore_patterns("*.log", "media", "export"))
