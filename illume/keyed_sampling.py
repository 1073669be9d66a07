"""Sampling whose draws belong to the query, not to the batch it happens to be in.

A torch seed per `generate` call makes a query's candidates depend on which other queries
share its batch and in which order: the backend groups tasks as their images arrive, so the
same task on the same model got different candidates from run to run (0 of 200 demo tasks
alike between two runs of the main job). Here each output row draws from its own generator,
seeded by the query's key, the temperature and the candidate's index, and samples by the
Gumbel-max rule: argmax(logits / T + Gumbel noise) over the top-k tokens is a draw from
softmax(logits / T) restricted to them, the distribution `do_sample=True` draws from. The
processor leaves generate's own draw a single token to pick, so no shared random state counts.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import torch


def row_seed(seed: int, key: str, temperature_index: int, candidate_index: int) -> int:
    """A 63-bit seed for one candidate of one query."""
    digest = hashlib.sha256(f"{seed}\x1f{key}\x1f{temperature_index}\x1f{candidate_index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def content_key(image, question: str, answer: str) -> str:
    """The key of a query that names none: its content (the same picture and text sample alike)."""
    digest = hashlib.sha256()
    for part in (question, answer, image.mode, repr(image.size)):
        digest.update(part.encode())
        digest.update(b"\x1f")
    digest.update(image.tobytes())
    return digest.hexdigest()


class KeyedGumbelSampler:
    """A logits processor for `generate`: temperature, top-k and Gumbel noise from one generator per
    row (rows in `generate`'s order: each query's num_return_sequences rows together). Put last, after
    the model's own processors, as transformers applies its sampling warpers."""

    def __init__(self, seeds: Sequence[int], temperature: float, top_k: int | None):
        self.seeds, self.temperature, self.top_k = list(seeds), float(temperature), top_k
        self.generators: list[torch.Generator] | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.shape[0] != len(self.seeds):
            raise ValueError(f"{scores.shape[0]} rows to sample, {len(self.seeds)} seeds")
        if self.generators is None:
            self.generators = [torch.Generator(device=scores.device).manual_seed(s) for s in self.seeds]
        scores = scores.float() / self.temperature
        if self.top_k is not None and self.top_k < scores.shape[-1]:
            kth = torch.topk(scores, self.top_k, dim=-1).values[..., -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        uniform = torch.stack([torch.rand(scores.shape[-1], generator=g, device=scores.device)
                               for g in self.generators])
        gumbel = -torch.log(-torch.log(uniform.clamp(min=1e-20, max=1.0 - 1e-7)))
        chosen = (scores + gumbel).argmax(dim=-1, keepdim=True)
        # Only the chosen token is left: generate's own draw (it samples several sequences per
        # query only with do_sample) can pick nothing else.
        return torch.full_like(scores, float("-inf")).scatter(-1, chosen, 0.0)
