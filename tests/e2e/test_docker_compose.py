"""docker-compose.yml for teams: it validates, and carries what Label Studio needs to reach the backend."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def compose_command() -> list[str]:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.fail("neither `docker compose` nor `docker-compose` is installed (scripts/install.sh --test installs it)")


def config(env_file: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*compose_command(), "--env-file", str(env_file), "-f", str(REPO / "docker-compose.yml"),
                           "config", *args], capture_output=True, text=True, cwd=REPO)


def test_compose_config_passes_with_the_example_env():
    result = config(REPO / ".env.example")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert {"db", "label-studio", "ml-backend", "trainer", "ml-backend-gpu"} <= set(services)
    studio = services["label-studio"]["environment"]
    # both: the backend's URL (ML_BLOCK_LOCAL_IP) and the webhook Label Studio registers to it (SSRF_...)
    assert studio["ML_BLOCK_LOCAL_IP"] == "false" and studio["SSRF_PROTECTION_ENABLED"] == "false"
    assert studio["DJANGO_DB"] == "default" and services["label-studio"]["image"].endswith(":1.23.2")
    backend = services["ml-backend"]["environment"]
    assert backend["LABEL_STUDIO_URL"] == "http://label-studio:8080"
    assert backend["ILLUME_BASIC_AUTH"].startswith("studio:") and backend["ILLUME_ADMIN_TOKEN"]
    gpus = services["ml-backend-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpus["capabilities"] == ["gpu"]
    # the GPU services build their own image with the CUDA build of torch, under their own tag
    assert services["ml-backend"]["image"] == "illume-studio:cpu"
    for name in ("ml-backend-gpu", "trainer"):
        assert services[name]["image"] == "illume-studio:gpu"
        assert services[name]["build"]["args"]["TORCH_INDEX"] == "https://pypi.org/simple"
    assert "TORCH_INDEX" not in (services["ml-backend"]["build"].get("args") or {})  # the Dockerfile's CPU index


def test_compose_refuses_to_start_without_secrets(tmp_path):
    env = tmp_path / ".env"
    env.write_text("\n".join(line for line in (REPO / ".env.example").read_text().splitlines()
                             if not line.startswith("POSTGRES_PASSWORD")))
    result = config(env)
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr
