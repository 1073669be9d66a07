"""The JSON templates and how the flags fill their "auto" values."""
from __future__ import annotations

import json

import pytest
import torch

from illume.errors import IllumeError
from training import TrainConfig
from training.deepspeed_config import build, template_path


def _config(**kw) -> TrainConfig:
    return TrainConfig(export="e", base_model="m", out="o", **kw)


@pytest.mark.parametrize("stage", [0, 2, 3])
def test_templates_are_filled_from_the_flags(stage):
    cfg = build(_config(zero=stage, batch_size=4, grad_accum=3, lr=2e-4, warmup_steps=5), torch.device("cpu"), 100)
    assert cfg["zero_optimization"]["stage"] == stage
    assert cfg["train_micro_batch_size_per_gpu"] == 4 and cfg["gradient_accumulation_steps"] == 3
    assert cfg["optimizer"]["params"] == {"lr": 2e-4, "betas": [0.9, 0.99], "weight_decay": 0.2, "torch_adam": True}
    assert cfg["scheduler"]["params"]["warmup_num_steps"] == 5 and cfg["scheduler"]["params"]["total_num_steps"] == 100
    assert cfg["scheduler"]["params"]["warmup_min_lr"] == 0.0
    assert cfg["bf16"]["enabled"] is False  # fp32 on CPU
    assert "auto" not in json.dumps(cfg)


def test_no_warmup_starts_at_full_rate_and_offload_adds_cpu_sections():
    cfg = build(_config(zero=3, offload=True), torch.device("cpu"), 10)
    assert cfg["scheduler"]["params"]["warmup_min_lr"] == cfg["optimizer"]["params"]["lr"]
    assert cfg["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert cfg["zero_optimization"]["offload_param"]["device"] == "cpu"


def test_user_config_errors(tmp_path):
    bad = tmp_path / "ds.json"
    bad.write_text(json.dumps({"train_micro_batch_size_per_gpu": "auto", "fp16": {"enabled": True}}))
    with pytest.raises(IllumeError, match="fp16, which needs a GPU"):
        build(_config(deepspeed_config=str(bad)), torch.device("cpu"), 10)
    bad.write_text(json.dumps({"zero_optimization": {"stage": 2, "sub_group_size": "auto"}}))
    with pytest.raises(IllumeError, match="zero_optimization.sub_group_size"):
        build(_config(deepspeed_config=str(bad)), torch.device("cpu"), 10)
    bad.write_text("{")
    with pytest.raises(IllumeError, match="not valid JSON"):
        build(_config(deepspeed_config=str(bad)), torch.device("cpu"), 10)
    with pytest.raises(IllumeError, match="ZeRO stage 1"):
        template_path(1)
