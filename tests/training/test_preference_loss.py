"""The preference part of the objective: DPO on a hand-made pair, its weight, TRL's diagnostics per epoch."""
from __future__ import annotations

import json

import pytest
import torch

from illume.errors import IllumeError
from illume.vlm import ADAPTER_META
from training import TrainConfig, run
from training.data import IGNORE
from training.losses import DPO_STATS, dpo_loss, sequence_logprobs


def test_a_few_steps_on_a_hand_made_pair_raise_its_margin():
    # Two 4-token continuations of the same 2-token prompt, over a 6-word vocabulary.
    chosen = torch.tensor([[0, 1, 2, 3, 4, 5]])
    rejected = torch.tensor([[0, 1, 5, 4, 3, 2]])
    labels = torch.cat([chosen, rejected])
    labels[:, :2] = IGNORE  # the prompt is not scored
    torch.manual_seed(0)
    logits = torch.nn.Parameter(torch.randn(2, 6, 6))
    reference, _ = sequence_logprobs(logits.detach(), labels)
    optimizer = torch.optim.SGD([logits], lr=1.0)
    history = []
    for _ in range(5):
        policy, _ = sequence_logprobs(logits, labels)
        loss, stats = dpo_loss(policy[:1], policy[1:], reference[:1], reference[1:], beta=0.1)
        history.append(stats)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert set(history[0]) == set(DPO_STATS)
    assert history[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-6)  # policy == reference at the start
    assert history[-1]["rewards/margins"] > history[0]["rewards/margins"] + 0.05
    assert history[-1]["rewards/chosen"] > 0 > history[-1]["rewards/rejected"]
    assert history[-1]["rewards/accuracies"] == 1.0
    assert history[-1]["logps/chosen"] > history[0]["logps/chosen"]


def test_dpo_weight_maps_the_dpo_switch_and_refuses_negatives(tmp_path):
    common = dict(export=str(tmp_path), base_model="m", out=str(tmp_path / "out"))
    assert TrainConfig(**common).dpo is False and TrainConfig(**common).dpo_weight == 0.0
    assert TrainConfig(**common, dpo=True).dpo_weight == 1.0
    assert TrainConfig(**common, dpo_weight=0.25).dpo is True
    with pytest.raises(IllumeError, match="--dpo-weight must not be negative"):
        TrainConfig(**common, dpo_weight=-1.0)


def test_the_job_logs_trl_diagnostics_per_epoch_with_the_illume_loss(tmp_path, tiny_model_dir, make_export):
    export = make_export(tmp_path / "export", items=4)  # rows and pairs: ILLUME + weighted DPO
    result = run(TrainConfig(export=str(export), base_model=str(tiny_model_dir("llava")), out=str(tmp_path / "out"),
                             epochs=2, batch_size=4, lr=1e-2, dpo_weight=0.5))
    epochs = [json.loads((tmp_path / "out" / "eval" / f"epoch_{n}.json").read_text()) for n in (1, 2)]
    for number, epoch in enumerate(epochs, 1):
        assert epoch["epoch"] == number and set(DPO_STATS) <= set(epoch)
        assert epoch["illume_loss"] > 0 and epoch["dpo_loss"] > 0
        assert 0.0 <= epoch["rewards/accuracies"] <= 1.0 and epoch["logps/chosen"] < 0
    assert epochs[1]["rewards/margins"] > epochs[0]["rewards/margins"]
    assert result.metrics["rewards/margins"] == epochs[1]["rewards/margins"]
    meta = json.loads((result.adapter_dir / ADAPTER_META).read_text())
    assert meta["dpo"] is True and meta["dpo_weight"] == 0.5
