"""The diversity remedy (SamplingConfig.base_share): with an adapter kept unmerged, the hottest
share of the candidates is sampled by the model as built; the backend serves, reloads and
refuses bad checkpoints that way, and offline sampling takes the same setting."""
from __future__ import annotations

import dataclasses
import json
import time

import pytest
import torch
from backend_helpers import FAST_SAMPLING, LABEL_CONFIG, data_uri, task
from click.testing import CliRunner
from fastapi.testclient import TestClient
from PIL import Image

from connector.offline_sampling import OfflineJob, launcher_command
from illume.errors import IllumeError
from illume.images import ImagePolicy
from illume.layout import ADAPTER_META
from illume.options import env_values
from illume.vlm import DEFAULT_BASE_SHARE, VLM, Query, SamplingConfig
from ml_backend.app import create_app
from ml_backend.settings import Settings

ADMIN = {"Authorization": "Bearer adm1n"}
CONFIG = SamplingConfig(temperatures=(0.3, 0.8), per_temperature=3, max_new_tokens=8)


def differing_adapter(base: str, out, version: str, seed: int) -> str:
    """A LoRA adapter as the training job saves it, with random weights: its candidates differ
    from the model as built's."""
    from training.model import add_lora

    peft = add_lora(VLM.load(base, device="cpu").model)
    generator = torch.Generator().manual_seed(seed)
    for name, param in peft.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.5, generator=generator)
    peft.save_pretrained(str(out))
    (out / ADAPTER_META).write_text(json.dumps({"base_model": base, "version": version}))
    return str(out)


@pytest.fixture(scope="module")
def adapter(llava_dir, tmp_path_factory) -> str:
    return differing_adapter(str(llava_dir), tmp_path_factory.mktemp("adapter"), "round-1", seed=0)


def test_the_base_share_takes_the_hottest_temperatures_first():
    def counts(share: float) -> list[int]:
        return SamplingConfig(base_share=share).base_counts()  # 5 x T=0.3 + 5 x T=0.8

    assert counts(0.5) == [0, 5] and counts(0.3) == [0, 3] and counts(0.7) == [2, 5]
    assert counts(0.0) == [0, 0] and counts(1.0) == [5, 5]
    assert SamplingConfig(temperatures=(0.9, 0.2), base_share=0.5).base_counts() == [5, 0]
    with pytest.raises(IllumeError, match="between 0 and 1"):
        SamplingConfig(base_share=1.5)


def test_with_the_remedy_the_hot_half_comes_from_the_model_as_built(llava, llava_dir, adapter):
    queries = [Query(Image.new("RGB", (32, 32), colour), "what color is the shape ?", "red")
               for colour in ("red", "blue")]
    tuned = VLM.load(str(llava_dir), adapter, device="cpu", keep_base=True)
    assert tuned.base_available and not llava.base_available
    as_built = llava.sample(queries, CONFIG, dedupe=False)
    own = tuned.sample(queries, CONFIG, dedupe=False)  # base share 0: all through the adapter
    mixed = tuned.sample(queries, dataclasses.replace(CONFIG, base_share=0.5), dedupe=False)

    def at(temperature: float, per_item) -> list[tuple[str, float]]:
        return [(c.text, round(c.score, 4)) for cands in per_item for c in cands if c.temperature == temperature]

    assert [len(c) for c in mixed] == [CONFIG.count] * len(queries)
    assert at(0.8, mixed) == at(0.8, as_built) != at(0.8, own)  # the hot half: exactly the model as built's
    assert at(0.3, mixed) == at(0.3, own) != at(0.3, as_built)  # the cold half: the adapter's

    merged = VLM.load(str(llava_dir), adapter, device="cpu")  # no base model left to sample from
    with pytest.raises(IllumeError, match="merged into the weights"):
        merged.sample(queries, dataclasses.replace(CONFIG, base_share=0.5))


def _wait_reload(client) -> dict:
    deadline = time.monotonic() + 120
    while (status := client.get("/reload", headers=ADMIN).json())["state"] == "loading":
        assert time.monotonic() < deadline, "the reload did not finish"
        time.sleep(0.1)  # polling a background job
    return status


def _predict(client) -> dict:
    response = client.post("/predict", json={"tasks": [task(1, data_uri("red"))], "project": "1",
                                             "label_config": LABEL_CONFIG})
    assert response.status_code == 200, response.text
    return response.json()["results"][0]


def test_backend_keeps_adapters_unmerged_across_reloads_and_refuses_a_broken_one(llava_dir, adapter, tmp_path):
    settings = Settings(model=str(llava_dir), adapter=adapter, device="cpu", admin_token="adm1n",
                        sampling=dataclasses.replace(FAST_SAMPLING, base_share=0.5), preselect=1,
                        images=ImagePolicy())
    app = create_app(settings)
    holder = app.state.holder
    with TestClient(app) as client:
        assert holder.current.vlm.base_available
        first = _predict(client)
        assert first["result"] and first["model_version"] == "round-1"

        second = differing_adapter(str(llava_dir), tmp_path / "round-2", "round-2", seed=1)
        assert client.post("/reload", json={"model": str(llava_dir), "adapter": second},
                           headers=ADMIN).status_code == 202
        status = _wait_reload(client)
        assert status["state"] == "ready" and status["serving_version"] == "round-2"
        assert holder.current.vlm.base_available  # the reloaded adapter is kept unmerged too

        broken = tmp_path / "broken"
        broken.mkdir()
        (broken / "adapter_config.json").write_text((tmp_path / "round-2" / "adapter_config.json").read_text())
        (broken / "adapter_model.safetensors").write_bytes(b"not weights")
        assert client.post("/reload", json={"model": str(llava_dir), "adapter": str(broken), "version": "round-3"},
                           headers=ADMIN).status_code == 202
        status = _wait_reload(client)
        assert status["state"] == "failed" and "checkpoint refused" in status["error"]
        after = _predict(client)
        assert after["result"] and after["model_version"] == "round-2"


def test_the_setting_is_one_option_for_the_backend_and_offline_sampling():
    from ml_backend.server import main

    refused = CliRunner().invoke(main, ["--model", "m", "--base-share", "1.5"])
    assert refused.exit_code == 2 and "--base-share" in refused.output
    assert Settings(model="m").sampling.base_share == OfflineJob("u", 1, "m").sampling.base_share == DEFAULT_BASE_SHARE
    assert env_values(SamplingConfig, {"ILLUME_BASE_SHARE": "0.25"}) == {"base_share": 0.25}
    shared = SamplingConfig(base_share=0.25)
    command = launcher_command(OfflineJob("u", 1, "m", sampling=shared), processes=1)
    assert command[command.index("--base-share") + 1] == "0.25"
