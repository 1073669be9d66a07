"""The two objectives, as a few lines of tensor math.

ILLUME (SPEC section 1): answer LM loss + w * rationale LM loss, with
w = #answer-only rows / #rationale rows, so both kinds of rows weigh the same in total.
The job adds dpo_weight * DPO on (accepted, unticked) pairs of the same item.

Preference losses on h = (pi_c - ref_c) - (pi_r - ref_r), where pi_* / ref_* are the
log-probabilities of the chosen / rejected rationale under the trained model and under the
reference (the same model with its adapter disabled), summed over tokens or, with
length normalisation, averaged:
  dpo  (Rafailov et al. 2023)  -log sigmoid(beta h); with label smoothing e (conservative DPO,
       Mitchell 2023) -(1 - e) log sigmoid(beta h) - e log sigmoid(-beta h)
  ipo  (Azar et al. 2023)      (h - 1 / (2 beta))^2
and, unpaired, on r = pi - ref of single rationales, desirable (accepted) or not (unticked, also
on items where nothing was accepted):
  kto  (Ethayarajh et al. 2024) 1 - sigmoid(beta (r - z)) for desirable, 1 - sigmoid(beta (z - r))
       for undesirable ones, each side's mean (so the many unticked do not drown the few
       accepted); z, the reference point, is the batch's mean r (detached, >= 0): a cheap stand-in
       for the paper's KL estimate on mismatched prompt/completion pairs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from illume.run_diagnostics import DPO_STATS
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


PREFERENCE_LOSSES = ("dpo", "ipo", "kto")


def preference_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
                    ref_rejected: torch.Tensor, beta: float = 0.1, kind: str = "dpo",
                    label_smoothing: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """The pairs' mean loss and TRL's diagnostics: implicit rewards beta * (policy - reference) of
    the chosen and rejected rationale, how often chosen > rejected, their margin, the policy log-probs."""
    chosen = beta * (policy_chosen - ref_chosen)
    rejected = beta * (policy_rejected - ref_rejected)
    if kind == "dpo":
        margin = chosen - rejected
        loss = (-(1 - label_smoothing) * F.logsigmoid(margin) - label_smoothing * F.logsigmoid(-margin)).mean()
    elif kind == "ipo":
        loss = ((chosen - rejected) / beta - 1 / (2 * beta)).pow(2).mean()
    else:
        raise ValueError(f"unknown preference loss {kind!r} (one of {PREFERENCE_LOSSES})")
    with torch.no_grad():
        values = (chosen.mean(), rejected.mean(), (chosen > rejected).float().mean(), (chosen - rejected).mean(),
                  policy_chosen.mean(), policy_rejected.mean())
    return loss, {name: float(v) for name, v in zip(DPO_STATS, values)}


def kto_loss(policy: torch.Tensor, reference: torch.Tensor, desirable: torch.Tensor,
             beta: float = 0.1) -> tuple[torch.Tensor, dict[str, float]]:
    """KTO on a batch of single rationales (desirable: bool per example) and TRL-style diagnostics;
    rewards/accuracies is the share on the right side of the reference point."""
    rewards = beta * (policy - reference)
    z = rewards.detach().mean().clamp(min=0)
    losses = torch.where(desirable, 1 - torch.sigmoid(rewards - z), 1 - torch.sigmoid(z - rewards))
    loss = sum(losses[side].mean() for side in (desirable, ~desirable) if side.any())
    with torch.no_grad():
        stats = {"kl": float(z / beta), "rewards/accuracies": float(((rewards > z) == desirable).float().mean())}
        for side, name in ((desirable, "chosen"), (~desirable, "rejected")):
            if side.any():
                stats[f"rewards/{name}"] = float(rewards[side].mean())
                stats[f"logps/{name}"] = float(policy[side].mean())
        if desirable.any() and (~desirable).any():
            stats["rewards/margins"] = stats["rewards/chosen"] - stats["rewards/rejected"]
    return loss, stats
