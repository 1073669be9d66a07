"""Candidates per second: the batched sampler against the naive way, on one tiny model.

Naive = one generate call per item per candidate, as simple backends do.
Batched = illume.vlm.VLM.sample: one generate call per temperature for the whole batch.

    python benchmarks/sampling.py [--items 32] [--per-temperature 5] [--max-new-tokens 20]
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch
from PIL import Image

from illume.tiny_models import build_tiny_model
from illume.vlm import VLM, Query, SamplingConfig


def make_queries(count: int) -> list[Query]:
    colours = [(220, 40, 40), (40, 160, 40), (40, 40, 220), (230, 200, 30)]
    return [Query(Image.new("RGB", (64, 64), colours[i % 4]), f"what color is shape {i} ?", "red") for i in range(count)]


def naive(vlm: VLM, queries: list[Query], config: SamplingConfig) -> int:
    produced = 0
    top_k = vlm._top_k(config.top_k_fraction)
    for query in queries:
        inputs = vlm.encode([query.image], vlm.rationale_texts([query]))
        for temperature in config.temperatures:
            for _ in range(config.per_temperature):
                texts, _ = vlm._generate(inputs, do_sample=True, temperature=temperature, top_k=top_k,
                                         max_new_tokens=config.max_new_tokens)
                produced += len(texts)
    return produced


def batched(vlm: VLM, queries: list[Query], config: SamplingConfig) -> int:
    return sum(len(c) for c in vlm.sample(queries, config, dedupe=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=32)
    parser.add_argument("--per-temperature", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--architecture", default="llava")
    args = parser.parse_args()

    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        vlm = VLM.load(str(build_tiny_model(args.architecture, tmp)))
        queries = make_queries(args.items)
        config = SamplingConfig(per_temperature=args.per_temperature, max_new_tokens=args.max_new_tokens)
        batched(vlm, queries[:2], config)  # warm-up
        results = {}
        for name, run in (("batched", batched), ("naive", naive)):
            start = time.perf_counter()
            count = run(vlm, queries, config)
            seconds = time.perf_counter() - start
            results[name] = count / seconds
            print(f"{name:8s} {count:5d} candidates in {seconds:7.2f} s = {results[name]:8.1f} candidates/s")
        ratio = results["batched"] / results["naive"]
        print(f"ratio    batched / naive = {ratio:.1f}x  ({args.items} items x {config.count} candidates, "
              f"{args.max_new_tokens} new tokens, tiny {args.architecture}, {torch.get_num_threads()} threads)")
        print(f"floor    >= 8x: {'met' if ratio >= 8 else 'NOT met'}")


if __name__ == "__main__":
    main()
