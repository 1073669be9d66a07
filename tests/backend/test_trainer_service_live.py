"""The compose wiring of "Start training", run as processes: Label Studio's button -> the backend's
webhook -> its forwarder -> the trainer service -> `illume-sync round` -> the backend reloaded.
The backend only reads the model; the trainer writes only under its runs directory."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from illume.labelstudio.client import LabelStudioClient
from illume.ports import free_port
from connector.project import read_label_config
from test_start_training_live import items, make_backend, new_project  # noqa: F401 (items: a fixture)

REPO = Path(__file__).resolve().parents[2]
TOKEN = "adm1n"  # make_backend's admin token: the forwarder sends it, the trainer requires it


def compose_services() -> dict:
    result = subprocess.run(["docker-compose", "--env-file", str(REPO / ".env.example"), "-f",
                             str(REPO / "docker-compose.yml"), "config"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["services"]


def mounts(service: dict) -> dict[str, bool]:
    """Container path -> writable."""
    found = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            parts = volume.split(":")
            found[parts[1]] = not (len(parts) > 2 and "ro" in parts[2].split(","))
        else:
            found[volume["target"]] = not volume.get("read_only", False)
    return found


def under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def test_compose_hands_start_training_to_the_gpu_trainer_and_the_backend_writes_no_read_only_path():
    services = compose_services()
    backend, trainer = services["ml-backend"], services["trainer"]
    assert backend["environment"]["ILLUME_TRAIN_COMMAND"] == "python -m connector.trainer_service forward"
    assert backend["environment"]["ILLUME_TRAINER_URL"] == "http://trainer:9090"
    assert trainer["command"][:4] == ["python", "-m", "connector.trainer_service", "serve"]
    assert trainer["image"] == "illume-studio:gpu" and "gpu" in trainer["profiles"]
    assert trainer["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    command = trainer["environment"]["ILLUME_TRAIN_COMMAND"].split()
    assert command[:2] == ["illume-sync", "round"] and "{project}" in command
    assert trainer["environment"]["ILLUME_BACKEND_URL"] == "http://ml-backend:9090"  # the round reloads it
    # The backend: models and runs read-only; what it writes (the forwarder's log) lies outside them.
    backend_mounts = mounts(backend)
    assert not backend_mounts["/models"] and not backend_mounts["/runs"]
    assert not any(under(backend["environment"]["ILLUME_TRAIN_LOG"], path) for path in backend_mounts)
    # The trainer: the run directory and its log under its writable /runs, which the backend sees at the
    # same path (the adapter a reload names).
    trainer_mounts = mounts(trainer)
    run_dir = command[command.index("--run-dir") + 1]
    assert trainer_mounts["/runs"] and under(run_dir, "/runs")
    assert under(trainer["environment"]["ILLUME_TRAIN_LOG"], "/runs")
    assert not trainer_mounts["/models"]
    for setting in ("ILLUME_ADMIN_TOKEN", "LABEL_STUDIO_API_KEY", "LABEL_STUDIO_URL"):
        assert trainer["environment"][setting] == backend["environment"][setting]


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def trainer(label_studio, tmp_path):
    """The trainer service as its own process; `start(command, env)` -> its URL."""
    started: list[subprocess.Popen] = []

    def start(command: str, env: dict[str, str]) -> str:
        port = free_port()
        process = subprocess.Popen([sys.executable, "-m", "connector.trainer_service", "serve", "--host", "127.0.0.1",
                                    "--port", str(port)], cwd=REPO, stdout=open(tmp_path / "trainer.out", "wb"),
                                   stderr=subprocess.STDOUT,
                                   env={**os.environ, **env, "ILLUME_TRAIN_COMMAND": command, "ILLUME_ADMIN_TOKEN": TOKEN,
                                        "LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": label_studio.token})
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if requests.get(f"{url}/health", timeout=2).ok:
                    return url
            except requests.ConnectionError:
                time.sleep(0.2)  # still starting
        pytest.fail(f"the trainer did not come up: {(tmp_path / 'trainer.out').read_text()[-2000:]}")

    yield start
    for process in started:
        process.terminate()
        process.wait(30)


def test_start_training_reaches_the_trainer_which_runs_the_round_and_reloads_the_backend(
        label_studio, llava, llava_dir, make_settings, items, trainer, tmp_path, monkeypatch):  # noqa: F811
    client = LabelStudioClient(label_studio.url, label_studio.token)
    runs = tmp_path / "runs"  # the trainer's writable volume
    runs.mkdir()
    backend_dir = tmp_path / "backend"  # where the backend may write (its forwarder's log)
    backend_dir.mkdir()
    model_before = tree(llava_dir)
    round_command = (f"{sys.executable} -m connector.cli round --project {{project}} --run-dir {runs}/project-{{project}} "
                     f"--base-model {llava_dir} --train-arg=--epochs --train-arg=1 --train-arg=--device "
                     f"--train-arg=cpu --json")
    monkeypatch.setenv("ILLUME_TRAIN_LOG", str(backend_dir / "forward.log"))
    with make_backend(label_studio, llava, make_settings, train_answer_s=25,
                      train_command=f"{sys.executable} -m connector.trainer_service forward") as server:
        url = trainer(round_command, {"ILLUME_BACKEND_URL": server.url, "ILLUME_TRAIN_LOG": str(runs / "train.log"),
                                      "ILLUME_TRAINER_ANSWER_S": "20"})
        monkeypatch.setenv("ILLUME_TRAINER_URL", url)  # the backend's forwarder reads it
        assert requests.post(f"{url}/webhook", json={"action": "START_TRAINING"}, timeout=10).status_code == 401
        project = new_project(client, label_studio, "trainer-service", read_label_config(), items, server.url)
        tasks = sorted(t["id"] for t in client.pages("/api/tasks", {"project": project["id"]}))
        for task in tasks[:2]:
            candidates = client.get(f"/api/tasks/{task}")["data"]["candidates"]
            client.sdk.annotations.create(id=task, result=[{"from_name": "rationales", "to_name": "image",
                                                            "type": "choices",
                                                            "value": {"choices": [candidates[0]["alias"]]}}])
        before = requests.get(f"{server.url}/health", timeout=10).json()["model_version"]
        backend = client.sdk.ml.list(project=project["id"])[0]
        client.sdk.ml.train(id=backend.id)  # Label Studio's "Start training" button
        state_file = runs / f"project-{project['id']}" / "rounds.json"
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and not state_file.is_file():  # written last by the round
            time.sleep(1.0)  # waiting for the trainer's round (export, training, reload)
        log = (runs / "train.log").read_text() if (runs / "train.log").is_file() else ""
        assert state_file.is_file(), log[-3000:]
        while time.monotonic() < deadline + 60:  # the round's process exits after writing its state
            trained = requests.get(f"{url}/training", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).json()
            if not trained["running"]:
                break
            time.sleep(0.5)
        pressed = requests.get(f"{server.url}/training", timeout=10).json()["presses"][-1]
        serving = requests.get(f"{server.url}/health", timeout=10).json()["model_version"]
    assert pressed["status"] == "started" and "round 1" in pressed["message"], pressed
    assert "handed to the trainer" in (backend_dir / "forward.log").read_text()
    run = trained["projects"][str(project["id"])]
    assert (run["round"], run["exit_code"]) == (1, 0), run
    assert before != serving == "illume-round-1"
    state = json.loads(state_file.read_text())
    assert state["rounds"]["1"]["promoted"] and state["rounds"]["1"]["tasks"] == tasks[:2]
    assert tree(llava_dir) == model_before  # the model mount stays as it was
    assert {p.name for p in backend_dir.iterdir()} == {"forward.log"}


def test_the_trainer_refuses_to_start_unconfigured_and_the_forwarder_says_when_it_is_unreachable():
    from connector.trainer_service import TrainerSettings, forward
    from illume.errors import IllumeError

    with pytest.raises(IllumeError, match="ILLUME_TRAIN_COMMAND"):
        TrainerSettings.from_env({"ILLUME_ADMIN_TOKEN": "t"})
    with pytest.raises(IllumeError, match="ILLUME_ADMIN_TOKEN"):
        TrainerSettings.from_env({"ILLUME_TRAIN_COMMAND": "illume-sync round"})
    with pytest.raises(IllumeError, match="ILLUME_TRAINER_ANSWER_S"):
        TrainerSettings.from_env({"ILLUME_TRAIN_COMMAND": "x", "ILLUME_ADMIN_TOKEN": "t", "ILLUME_TRAINER_ANSWER_S": "soon"})
    started, line = forward(f"http://127.0.0.1:{free_port()}", "t", {"action": "START_TRAINING", "project": 3})
    assert not started and "cannot be reached" in line and "--profile gpu up -d trainer" in line
