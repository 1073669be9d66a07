"""Shared fixtures: one real Label Studio for the session, tiny models built locally."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VQAX_VAL = REPO.parent / "shared" / "data" / "vqax" / "val.json"


@pytest.fixture(scope="session")
def load_benchmark():
    """load_benchmark("data_efficiency"): benchmarks/<name>.py as a module (the scripts are no package)."""
    def load(name: str):
        path = REPO / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"benchmark_{name}_under_test", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load


@pytest.fixture(scope="session")
def vqax_val_path() -> Path:
    if not VQAX_VAL.is_file():
        pytest.skip(f"{VQAX_VAL} is not present (it comes with the project's shared data)")
    return VQAX_VAL


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """tiny_model_dir("llava") -> a save_pretrained directory, built once per session."""
    from illume.tiny_models import build_tiny_model

    built: dict[str, Path] = {}

    def build(architecture: str = "llava") -> Path:
        if architecture not in built:
            built[architecture] = build_tiny_model(architecture, tmp_path_factory.mktemp(f"tiny-{architecture}"))
        return built[architecture]

    return build


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    """A real Label Studio server (its own venv, SQLite, loopback) for the whole session."""
    from connector.local_label_studio import LocalLabelStudio

    server = LocalLabelStudio(tmp_path_factory.mktemp("label-studio"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ls_client(label_studio):
    from label_studio_sdk import LabelStudio

    return LabelStudio(base_url=label_studio.url, api_key=label_studio.token)


@pytest.fixture(autouse=True)
def _environment_restored():
    """Each test leaves os.environ as it found it. In-process trainers (TRL/accelerate, DeepSpeed) set
    RANK, WORLD_SIZE and friends; leaked into later tests, every training subprocess they start takes
    itself for a launcher's rank and fails in DeepSpeed's MPI discovery."""
    import os

    before = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(before)
