"""The real backend over HTTP on every tiny architecture: one batched /predict of 3 tasks with
images of mixed sizes, then a reload onto a LoRA adapter that changes the served version."""
from __future__ import annotations

import json
import time

import pytest
import requests

from backend_helpers import FAST_SAMPLING, LABEL_CONFIG, ServerThread, data_uri, task
from illume.tiny_models import ARCHITECTURES, TORCHVISION_ARCHITECTURES, missing_requirement
from illume.layout import ADAPTER_META
from illume.vlm import VLM
from ml_backend.app import create_app
from ml_backend.model_holder import ModelHolder
from ml_backend.settings import Settings

ALL = [pytest.param(a, marks=pytest.mark.skipif(missing_requirement(a) is not None, reason=str(missing_requirement(a))))
       for a in ARCHITECTURES + TORCHVISION_ARCHITECTURES]
ADMIN = {"Authorization": "Bearer adm1n"}
TASKS = [task(1, data_uri("red", (48, 40))), task(2, data_uri("blue", (20, 90)), answer="blue"),
         task(3, data_uri("green", (64, 64)), question="how many shapes are there ?", answer="two")]


def save_fresh_adapter(base: str, out, version: str) -> str:
    """A LoRA adapter as the training job leaves it (peft files + illume_adapter.json), untrained."""
    from training.model import add_lora

    add_lora(VLM.load(base, device="cpu").model).save_pretrained(str(out))
    (out / ADAPTER_META).write_text(json.dumps({"base_model": base, "version": version}))
    return str(out)


def predict(url: str) -> list[dict]:
    response = requests.post(f"{url}/predict", json={"tasks": TASKS, "label_config": LABEL_CONFIG}, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()["results"]


@pytest.mark.parametrize("arch", ALL)
def test_predict_three_tasks_then_reload_onto_an_adapter(arch, tiny_model_dir, tmp_path, caplog):
    base = str(tiny_model_dir(arch))
    settings = Settings(model=base, device="cpu", admin_token="adm1n", sampling=FAST_SAMPLING, batch_size=8,
                        preselect=2)
    app = create_app(settings, ModelHolder.load(base, device="cpu"))
    adapter = save_fresh_adapter(base, tmp_path / "adapter", f"{arch}-round-1")
    with caplog.at_level("WARNING", logger="ml_backend"), ServerThread(app) as server:
        first = predict(server.url)
        assert len({r["model_version"] for r in first}) == 1
        assert all(r["result"] and r["score"] > 0 for r in first), first  # candidates for every task
        assert "failed" not in caplog.text, "the batch of 3 must run as one batch, not fall back to single tasks"

        assert requests.post(f"{server.url}/reload", json={"model": base, "adapter": adapter}, headers=ADMIN,
                             timeout=30).status_code == 202
        deadline = time.monotonic() + 120
        while (status := requests.get(f"{server.url}/reload", headers=ADMIN, timeout=30).json())["state"] == "loading":
            assert time.monotonic() < deadline, "the reload did not finish"
            time.sleep(0.1)  # polling a background job
        assert status["state"] == "ready", status
        assert status["serving_version"] == f"{arch}-round-1" != first[0]["model_version"]
        again = predict(server.url)
        assert [r["model_version"] for r in again] == [f"{arch}-round-1"] * 3
        assert all(r["result"] for r in again)
