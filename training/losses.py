"""The two objectives, as a few lines of tensor math.

ILLUME (SPEC section 1): answer LM loss + w * rationale LM loss, with
w = #answer-only rows / #rationale rows, so both kinds of rows weigh the same in total.

DPO (Rafailov et al. 2023): -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r))), where
pi_* / ref_* are the summed log-probabilities of the chosen / rejected rationale under
the trained model and under the reference (the same model with its adapter disabled).
"""
from __future__ import annotations

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


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """DPO loss and the mean chosen-minus-rejected log-probability margin of the policy."""
    logits = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    loss = -F.logsigmoid(beta * logits).mean()
    return loss, (policy_chosen - policy_rejected).detach().mean()
