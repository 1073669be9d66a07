"""The per-row sampler draws from softmax(logits / T) over the top-k tokens, row by row."""
from __future__ import annotations

import math

import torch
from PIL import Image

from illume.keyed_sampling import KeyedGumbelSampler, content_key, row_seed


def chosen(logits: torch.Tensor, seeds: list[int], temperature: float, top_k: int | None) -> list[int]:
    sampler = KeyedGumbelSampler(seeds, temperature, top_k)
    out = sampler(torch.zeros(len(seeds), 1, dtype=torch.long), logits.expand(len(seeds), -1).clone())
    assert torch.isfinite(out).sum(dim=-1).eq(1).all()  # one token left per row
    return out.argmax(dim=-1).tolist()


def test_draws_follow_the_tempered_top_k_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0]])
    temperature, top_k, rows = 0.7, 3, 6000
    picks = chosen(logits, [row_seed(0, f"q{i}", 0, 0) for i in range(rows)], temperature, top_k)
    kept = logits[0, :top_k] / temperature
    expected = torch.softmax(kept, dim=0).tolist()
    for token, p in enumerate(expected):
        share = picks.count(token) / rows
        assert abs(share - p) < 4 * math.sqrt(p * (1 - p) / rows), (token, share, p)
    assert not any(t >= top_k for t in picks)  # outside the top-k: never


def test_a_row_draws_the_same_whatever_rows_share_the_batch():
    logits = torch.randn(1, 50, generator=torch.Generator().manual_seed(3))
    seeds = [row_seed(1, f"q{i}", 0, j) for i in range(4) for j in range(2)]
    sampler = KeyedGumbelSampler(seeds, 1.0, None)
    steps_together = [sampler(None, logits.expand(8, -1).clone()).argmax(-1).tolist() for _ in range(5)]
    for row in (0, 5):
        alone = KeyedGumbelSampler([seeds[row]], 1.0, None)
        assert [alone(None, logits.clone()).argmax(-1).item() for _ in range(5)] == [s[row] for s in steps_together]


def test_seeds_and_content_keys_tell_queries_apart():
    assert row_seed(0, "a", 0, 0) == row_seed(0, "a", 0, 0)
    assert len({row_seed(0, "a", 0, 0), row_seed(1, "a", 0, 0), row_seed(0, "b", 0, 0),
                row_seed(0, "a", 1, 0), row_seed(0, "a", 0, 1)}) == 5
    red, blue = Image.new("RGB", (8, 8), "red"), Image.new("RGB", (8, 8), "blue")
    assert content_key(red, "q", "a") == content_key(red.copy(), "q", "a")
    assert len({content_key(red, "q", "a"), content_key(blue, "q", "a"), content_key(red, "q", "b"),
                content_key(red, "qa", "")}) == 4
