"""The preference part of the objective: DPO / IPO on a hand-made pair, its weight, TRL's diagnostics per epoch."""
from __future__ import annotations

import json

import pytest
import torch

from illume.errors import IllumeError
from illume.records import ANSWER_ONLY, RATIONALE, TrainingRow, read_jsonl, write_jsonl
from illume.layout import ADAPTER_META, EXPORT_ROWS, EXPORT_UNTICKED
from training import TrainConfig, run
from training.data import IGNORE
from illume.run_diagnostics import DPO_STATS
from training.losses import kto_loss, preference_loss, sequence_logprobs


# IPO's squared loss has gradients ~1/beta larger than DPO's: a smaller step keeps SGD from overshooting.
@pytest.mark.parametrize("kind, smoothing, lr", [("dpo", 0.0, 1.0), ("dpo", 0.1, 1.0), ("ipo", 0.0, 0.05)])
def test_a_few_steps_on_a_hand_made_pair_raise_its_margin(kind, smoothing, lr):
    # Two 4-token continuations of the same 2-token prompt, over a 6-word vocabulary.
    chosen = torch.tensor([[0, 1, 2, 3, 4, 5]])
    rejected = torch.tensor([[0, 1, 5, 4, 3, 2]])
    labels = torch.cat([chosen, rejected])
    labels[:, :2] = IGNORE  # the prompt is not scored
    torch.manual_seed(0)
    logits = torch.nn.Parameter(torch.randn(2, 6, 6))
    reference, _ = sequence_logprobs(logits.detach(), labels)
    optimizer = torch.optim.SGD([logits], lr=lr)
    history = []
    for _ in range(5):
        policy, _ = sequence_logprobs(logits, labels)
        loss, stats = preference_loss(policy[:1], policy[1:], reference[:1], reference[1:], 0.1, kind, smoothing)
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


def test_ipo_stops_pushing_at_its_target_margin_and_smoothing_pulls_back_a_won_pair():
    policy_chosen, ref = torch.zeros(1, requires_grad=True), torch.zeros(1)
    # IPO's loss is zero where beta * margin = 1/2 (margin 5 at beta 0.1), rising on either side.
    at_target, _ = preference_loss(policy_chosen + 5.0, torch.zeros(1), ref, ref, 0.1, "ipo")
    beyond, _ = preference_loss(policy_chosen + 8.0, torch.zeros(1), ref, ref, 0.1, "ipo")
    assert at_target.item() == pytest.approx(0.0) and beyond.item() > 1.0
    # Far past the target, plain DPO still (barely) pushes the margin up; smoothed DPO pushes it down.
    for smoothing, sign in ((0.0, -1), (0.2, 1)):
        policy = torch.tensor([60.0], requires_grad=True)
        loss, _ = preference_loss(policy, torch.zeros(1), ref, ref, 0.1, "dpo", smoothing)
        loss.backward()
        assert sign * policy.grad.item() > 0


def test_kto_on_single_rationales_raises_the_accepted_and_lowers_the_unticked():
    # One accepted and two unticked rationales (one of an item where nothing was accepted): no pairs.
    labels = torch.tensor([[0, 1, 2, 3, 4, 5], [0, 1, 5, 4, 3, 2], [0, 2, 4, 1, 3, 5]])
    labels[:, :2] = IGNORE
    desirable = torch.tensor([True, False, False])
    torch.manual_seed(0)
    logits = torch.nn.Parameter(torch.randn(3, 6, 6))
    reference, _ = sequence_logprobs(logits.detach(), labels)
    optimizer = torch.optim.SGD([logits], lr=5.0)  # KTO's sigmoid gradients are 1/4 of DPO's at the start
    history = []
    for _ in range(5):
        policy, _ = sequence_logprobs(logits, labels)
        loss, stats = kto_loss(policy, reference, desirable, beta=0.1)
        history.append(stats)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert {"kl", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected",
            "rewards/accuracies"} <= set(history[0])
    assert history[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-6)
    assert history[-1]["rewards/chosen"] > 0.05 and history[-1]["rewards/rejected"] < -0.05
    assert history[-1]["rewards/accuracies"] == 1.0 and history[-1]["kl"] >= 0
    only_unticked, parts = kto_loss(reference[1:], reference[1:], desirable[1:])  # a batch without an accepted one
    assert only_unticked.item() == pytest.approx(0.5) and "rewards/chosen" not in parts


def test_dpo_weight_maps_the_dpo_switch_and_refuses_negatives(tmp_path):
    common = dict(export=str(tmp_path), base_model="m", out=str(tmp_path / "out"))
    assert TrainConfig(**common).dpo is False and TrainConfig(**common).dpo_weight == 0.0
    assert TrainConfig(**common, dpo=True).dpo_weight == 1.0
    assert TrainConfig(**common, dpo_weight=0.25).dpo is True
    with pytest.raises(IllumeError, match="--dpo-weight must not be negative"):
        TrainConfig(**common, dpo_weight=-1.0)
    with pytest.raises(IllumeError, match="--preference-loss must be one of dpo, ipo, kto"):
        TrainConfig(**common, preference_loss="orpo")
    with pytest.raises(IllumeError, match="--dpo-label-smoothing"):
        TrainConfig(**common, dpo_label_smoothing=0.5)


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


def test_the_job_trains_kto_on_unticked_candidates_of_every_item(tmp_path, tiny_model_dir, make_export):
    export = make_export(tmp_path / "export", items=4)
    # Unticked candidates, also of items i1 and i3, which have no accepted rationale (answer-only rows).
    rows = read_jsonl(export / EXPORT_ROWS, TrainingRow)
    write_jsonl(export / EXPORT_UNTICKED, [TrainingRow(RATIONALE, r.item_id, r.image, r.question, r.answer,
                                                       "there are two dogs on grass.") for r in rows
                                           if r.kind == ANSWER_ONLY])
    common = dict(export=str(export), base_model=str(tiny_model_dir("llava")), lr=1e-2, dpo_weight=1.0,
                  preference_loss="kto")
    with pytest.raises(IllumeError, match="kto needs unticked candidates"):
        run(TrainConfig(**{**common, "export": str(make_export(tmp_path / "bare", items=2))}, out=str(tmp_path / "o")))
    result = run(TrainConfig(**common, out=str(tmp_path / "out"), epochs=2, batch_size=4, pair_batch_size=6))
    epochs = [json.loads((tmp_path / "out" / "eval" / f"epoch_{n}.json").read_text()) for n in (1, 2)]
    for epoch in epochs:
        assert epoch["dpo_loss"] > 0 and epoch["kl"] >= 0 and epoch["logps/rejected"] < 0
    assert epochs[1]["rewards/margins"] > epochs[0]["rewards/margins"]
    meta = json.loads((result.adapter_dir / ADAPTER_META).read_text())
    assert meta["preference_loss"] == "kto"
