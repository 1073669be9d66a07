"""Backend fixtures: one tiny LLaVA loaded once, apps over it, synthetic images."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from backend_helpers import FAST_SAMPLING, ServerThread, png_bytes
from illume.images import ImagePolicy
from illume.vlm import VLM
from ml_backend.app import create_app
from ml_backend.model_holder import Loaded, ModelHolder
from ml_backend.settings import Settings


@pytest.fixture(scope="session")
def llava_dir(tiny_model_dir) -> Path:
    return tiny_model_dir("llava")


@pytest.fixture(scope="session")
def llava(llava_dir) -> VLM:
    return VLM.load(str(llava_dir), device="cpu")


@pytest.fixture
def image_root(tmp_path) -> Path:
    root = tmp_path / "images"
    root.mkdir()
    (root / "red.png").write_bytes(png_bytes("red"))
    (root / "blue.png").write_bytes(png_bytes("blue"))
    return root


@pytest.fixture
def make_settings(llava_dir, image_root):
    def make(**overrides) -> Settings:
        values = dict(model=str(llava_dir), images=ImagePolicy(allowed_roots=[image_root]),
                      sampling=FAST_SAMPLING, batch_size=8, queue_size=64, preselect=2)
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def serve(llava, make_settings):
    """serve(**settings) -> the backend on a real uvicorn server with its connection limits."""
    servers = []

    def start(**overrides):
        settings = make_settings(**overrides)
        app = create_app(settings, ModelHolder(Loaded(llava, "served-v1"), device="cpu"))
        servers.append(ServerThread(app, settings=settings).__enter__())
        return servers[-1]

    yield start
    for server in servers:
        server.__exit__(None, None, None)


@pytest.fixture
def make_client(llava, make_settings):
    """make_client(**settings) -> (TestClient, app) over the session's loaded tiny model."""
    from fastapi.testclient import TestClient

    clients = []

    def make(**overrides):
        settings = make_settings(**overrides)
        holder = ModelHolder(Loaded(llava, settings.version or llava.version), device="cpu")
        app = create_app(settings, holder)
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        return client, app

    yield make
    for client in clients:
        client.__exit__(None, None, None)


if os.environ.get("ILLUME_TEST_LS"):
    @pytest.fixture(scope="session")
    def label_studio():
        """For iterating on these tests: an already running Label Studio, named by ILLUME_TEST_LS
        (a JSON file with url, token, data_dir), instead of starting one (a minute or more)."""
        from connector.local_label_studio import LocalLabelStudio

        values = json.loads(Path(os.environ["ILLUME_TEST_LS"]).read_text())
        port = int(values["url"].rsplit(":", 1)[1])
        return LocalLabelStudio(Path(values["data_dir"]), port=port, token=values["token"])
