"""A bad checkpoint is refused and the old model keeps serving: /reload onto adapters that are
broken in ways a crashed, diverged or foreign training run leaves them."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import load_file, save_file

from backend_helpers import FAST_SAMPLING, LABEL_CONFIG, data_uri, task
from illume.layout import ADAPTER_META
from ml_backend.app import create_app
from ml_backend.model_holder import MAX_REASON_CHARS, ModelHolder
from ml_backend.settings import Settings
from test_backend_architectures import save_fresh_adapter

ADMIN = {"Authorization": "Bearer adm1n"}
WEIGHTS = "adapter_model.safetensors"


def _fill(value):
    def corrupt(folder):
        save_file({k: torch.full_like(v, value) for k, v in load_file(folder / WEIGHTS).items()}, folder / WEIGHTS)
    return corrupt


def _meta(**values):
    def corrupt(folder):
        meta = json.loads((folder / ADAPTER_META).read_text())
        (folder / ADAPTER_META).write_text(json.dumps({**meta, **values}))
    return corrupt


def _foreign(folder):  # a peft adapter of another base, without our metadata
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "Qwen/Qwen2-VL-7B"}))
    (folder / ADAPTER_META).unlink()


CASES = {
    "NaN weights": (_fill(float("nan")), "non-finite weights"),
    "inf weights": (_fill(float("inf")), "non-finite weights"),
    "no tensors": (lambda f: save_file({}, f / WEIGHTS), "holds no weights"),
    "no weights file": (lambda f: (f / WEIGHTS).unlink(), "has no adapter_model.safetensors"),
    "truncated weights": (lambda f: (f / WEIGHTS).write_bytes((f / WEIGHTS).read_bytes()[:100]), "cannot be read"),
    "another base": (_foreign, "was trained on Qwen/Qwen2-VL-7B"),
    "version a number": (_meta(version=5), "not a printable text"),
    "version with a newline": (_meta(version="r1\nforged log line"), "not a printable text"),
    "version of 5 MB": (_meta(version="v" * 5_000_000), "at most 1048576 bytes"),
    "metadata not JSON": (lambda f: (f / ADAPTER_META).write_text("{not json"), "not valid JSON"),
    "rank mismatch": (lambda f: (f / "adapter_config.json").write_text(json.dumps(
        {**json.loads((f / "adapter_config.json").read_text()), "r": 2})), "size mismatch"),
}


@pytest.fixture(scope="module")
def served(llava_dir, tmp_path_factory):
    base = str(llava_dir)
    holder = ModelHolder.load(base, device="cpu")
    app = create_app(Settings(model=base, device="cpu", admin_token="adm1n", sampling=FAST_SAMPLING), holder)
    good = save_fresh_adapter(base, tmp_path_factory.mktemp("good") / "adapter", "round-1")
    with TestClient(app) as client:
        yield client, holder, base, good


def _reload(client, holder, base, adapter) -> dict:
    response = client.post("/reload", json={"model": base, "adapter": adapter}, headers=ADMIN)
    assert response.status_code == 202, response.text
    holder.wait_reload(300)
    return client.get("/reload", headers=ADMIN).json()


@pytest.mark.parametrize("case", list(CASES))
def test_a_broken_adapter_is_refused_and_the_old_model_serves(served, tmp_path, case):
    client, holder, base, good = served
    before = holder.version
    corrupt, reason = CASES[case]
    broken = tmp_path / "adapter"
    shutil.copytree(good, broken)
    corrupt(broken)
    status = _reload(client, holder, base, str(broken))
    assert status["state"] == "failed" and reason in status["error"], status["error"][:500]
    assert len(status["error"]) <= MAX_REASON_CHARS + 100
    assert holder.version == before and client.get("/health").status_code == 200
    response = client.post("/predict", json={"tasks": [task(1, data_uri("red", (48, 40)))], "label_config": LABEL_CONFIG})
    assert response.status_code == 200 and response.json()["results"][0]["model_version"] == before


def test_the_intact_adapter_is_served(served):
    client, holder, base, good = served
    assert _reload(client, holder, base, good)["state"] == "ready" and holder.version == "round-1"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the interrupt, re-raised
def test_an_interrupted_reload_says_failed_not_loading(served, monkeypatch):
    client, holder, base, good = served
    before = holder.version

    def interrupted(model, adapter):
        raise KeyboardInterrupt

    monkeypatch.setattr(holder, "_loader", interrupted)
    holder.start_reload(base, good, None)
    holder.wait_reload(60)
    assert holder.status.state == "failed" and "interrupted" in holder.status.error and holder.version == before
