"""`illume-backend` itself: the console script starts uvicorn with one model and serves the protocol."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import requests

from illume.ports import free_port


def test_cli_serves_with_uvicorn(llava_dir, tmp_path):
    port = free_port()
    env = dict(os.environ, ILLUME_BASIC_AUTH="studio:s3cret", ILLUME_ADMIN_TOKEN="adm1n",
               ILLUME_MAX_NEW_TOKENS="4", ILLUME_PER_TEMPERATURE="2")
    command = [sys.executable, "-m", "ml_backend.server", "--model", str(llava_dir), "--model-version", "cli-v1",
               "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    log = open(tmp_path / "backend.log", "wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
        while True:
            assert process.poll() is None, (tmp_path / "backend.log").read_text()
            try:
                health = requests.get(f"{url}/health", timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "the backend did not start"
                time.sleep(0.2)  # readiness poll
        assert health.json()["model_version"] == "cli-v1"
        assert "uvicorn" in health.headers.get("server", "")
        assert requests.post(f"{url}/setup", json={}, timeout=10).status_code == 401
        setup = requests.post(f"{url}/setup", json={}, auth=("studio", "s3cret"), timeout=10)
        assert setup.json() == {"model_version": "cli-v1"}
        reload_status = requests.get(f"{url}/reload", headers={"Authorization": "Bearer adm1n"}, timeout=10)
        assert reload_status.json()["serving_version"] == "cli-v1"
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def test_cli_refuses_bad_options(llava_dir):
    result = subprocess.run([sys.executable, "-m", "ml_backend.server", "--model", str(llava_dir),
                             "--basic-auth", "no-colon"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "expected user:password" in result.stderr
    result = subprocess.run([sys.executable, "-m", "ml_backend.server", "--model", "/nowhere/model"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "does not exist" in result.stderr


def test_listening_beyond_loopback_without_auth_warns_loudly(caplog):
    import logging

    from ml_backend.server import warn_if_open

    with caplog.at_level(logging.WARNING, logger="ml_backend"):
        for host, auth in (("127.0.0.1", None), ("::1", None), ("localhost", None), ("0.0.0.0", ("u", "p"))):
            warn_if_open(host, auth)
        assert caplog.records == []
        warn_if_open("0.0.0.0", None)
    assert len(caplog.records) == 1 and "NO AUTHENTICATION: the backend listens on 0.0.0.0" in caplog.text
    assert "--basic-auth" in caplog.text and "START_TRAINING" in caplog.text
