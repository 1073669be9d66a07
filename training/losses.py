"""The two objectives, as a few lines of tensor math.

ILLUME (SPEC section 1): answer LM loss + w * rationale LM loss, with
w = #answer-only rows / #rationale rows, so both kinds of rows weigh the same in total.
The job adds dpo_weight * DPO on (accepted, unticked) pairs of the same item.

DPO (Rafailov et al. 2023): -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r))), where
pi_* / ref_* are the summed log-probabilities of the chosen / rejected rationale under
the trained model and under the reference (the same model with its adapter disabled).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from training.data import IGNORE


def sequence_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example: summed log-probability of the labelled tokens, and their count."""
    logits = logits[:, :-1].float()
    labels = labels[:, 1:]
    mask = labels != IGNORE
    token_logp = torch.log_softmax(logits, dim=-1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (token_logp * mask).sum(-1), mask.sum(-1)


def illume_loss(logits: torch.Tensor, labels: torch.Tensor, loss_weight: torch.Tensor) -> torch.Tensor:
    """Mean over rows of weight_row * mean token NLL of the row's target."""
    logp, count = sequence_logprobs(logits, labels)
    nll = -logp / count.clamp(min=1)
    return (loss_weight.to(nll.dtype) * nll).mean()


DPO_STATS = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
             "logps/chosen", "logps/rejected")  # TRL's DPOTrainer names, means over the pairs


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float = 0.1) -> tuple[torch.Tensor, dict[str, float]]:
    """DPO loss and TRL's diagnostics: implicit rewards beta * (policy - reference) of the chosen
    and rejected rationale, how often chosen > rejected, their margin, and the policy log-probs."""
    chosen = beta * (policy_chosen - ref_chosen)
    rejected = beta * (policy_rejected - ref_rejected)
    loss = -F.logsigmoid(chosen - rejected).mean()
    with torch.no_grad():
        values = (chosen.mean(), rejected.mean(), (chosen > rejected).float().mean(), (chosen - rejected).mean(),
                  policy_chosen.mean(), policy_rejected.mean())
    return loss, {name: float(v) for name, v in zip(DPO_STATS, values)}


def preference_diagnostics(eval_dir: str | Path) -> list[dict[str, float]]:
    """Per epoch of a finished run (its eval/epoch_<n>.json): the epoch, the DPO loss and TRL's diagnostics."""
    files = sorted(Path(eval_dir).glob("epoch_*.json"), key=lambda p: int(p.stem.split("_")[1]))
    epochs = [json.loads(p.read_text(encoding="utf-8")) for p in files]
    return [{k: e[k] for k in ("epoch", "dpo_loss", *DPO_STATS) if k in e} for e in epochs if "dpo_loss" in e]
