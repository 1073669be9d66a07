"""Candidates per second: the batched sampler against the naive way, on one tiny model.

Naive = one generate call per item per candidate, as simple backends do.
Batched = illume.vlm.VLM.sample: one generate call per temperature for the whole batch.

    python benchmarks/sampling.py [--items 32] [--per-temperature 5] [--max-new-tokens 20]
    python benchmarks/sampling.py --offline [--tasks 48] [--max-new-tokens 20]

--offline: tasks/s of the two ways to give a project's tasks their candidates, on the same
tasks (two projects with the same items) of a local Label Studio, with the same model and
sampling settings: the backend path (`illume-sync predict`: Label Studio sends the tasks to
the backend's /predict, which writes the candidates back) against offline sharded sampling
(`illume-sync predict --offline --processes 2`: two processes under the deepspeed launcher).
Offline figures: wall clock of the whole launcher run (process start and model loading
included) and the sampling part alone (slowest rank).

    python benchmarks/sampling.py --adapter-cost [--model DIR] [--items 32] [--max-new-tokens 20]

--adapter-cost: tasks/s (items with all their candidates) with a LoRA adapter (rank 8 on the
training job's target modules, as the training job starts it: lora_B zero, so every way
generates the same tokens and the difference is the adapter's cost alone) merged into the
weights, as the backend loads it without the diversity remedy, against kept unmerged
(VLM.load keep_base, what --base-share needs) sampling all candidates through the adapter, and
with base share 0.5 (the hot half with the adapter disabled).
--model: a saved model (e.g. the demo model) instead of the tiny one.

    python benchmarks/sampling.py --keyed-cost [--model DIR] [--items 32] [--max-new-tokens 20]

--keyed-cost: tasks/s of VLM.sample, where every candidate of a task draws from a generator seeded
by the task (so batching never changes a task's candidates), against one torch seed per generate
call with transformers' own draw (how it sampled before), same model, same settings.

    python benchmarks/sampling.py --base-share-diversity [--run DIR] [--shares 0,0.3,0.5,0.7]

--base-share-diversity: distinct candidates per item, round by round, as the product samples
them (VLM.sample, 5 x T=0.3 + 5 x T=0.8, per base share) with the ILLUME adapters a
benchmarks/data_efficiency.py run left in DIR (default its cache): round 1 samples with the
model as built, round k with iteration k-1's adapter, on the run's 100 feedback items.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
from PIL import Image

from illume.tiny_models import build_tiny_model
from illume.layout import ADAPTER_META
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


def fresh_adapter(model: str, out) -> str:
    """A LoRA adapter as the training job saves it before its first step."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package, not benchmarks/training.py
    from training.model import add_lora

    add_lora(VLM.load(model, device="cpu").model).save_pretrained(str(out))
    (out / ADAPTER_META).write_text(json.dumps({"base_model": model, "version": "fresh"}))
    return str(out)


def best_times(ways: dict[str, Callable[[list[Query], int], object]], queries: list[Query],
               repeats: int) -> tuple[dict[str, float], dict[str, float]]:
    """Best of `repeats` runs per way (each called with the queries and the repeat as its seed), the ways
    interleaved after a warm-up; wall clock and this process's CPU time (on a shared machine the CPU
    time is the steadier figure of the two)."""
    wall = {name: float("inf") for name in ways}
    cpu = dict(wall)
    for run in ways.values():
        run(queries[:2], 0)  # warm-up
    for repeat in range(repeats):
        for name, run in ways.items():
            started, cpu_started = time.perf_counter(), time.process_time()
            run(queries, repeat)
            wall[name] = min(wall[name], time.perf_counter() - started)
            cpu[name] = min(cpu[name], time.process_time() - cpu_started)
    return wall, cpu


def print_rates(wall: dict[str, float], cpu: dict[str, float], items: int, width: int, baseline: str,
                settings: dict) -> None:
    """Tasks/s per way (tasks with all their 5 x T=0.3 + 5 x T=0.8 candidates), each other way's ratio
    to `baseline`, and the figures as one JSON line."""
    count = SamplingConfig().count
    for name in wall:
        print(f"{name:{width}s} {items} tasks x {count} candidates: {wall[name]:6.2f} s wall = "
              f"{items / wall[name]:6.2f} tasks/s; {cpu[name]:6.2f} CPU-s = {items / cpu[name]:6.2f} tasks per CPU-second")
    for name in wall:
        if name != baseline:
            print(f"ratio {name} / {baseline}: {wall[baseline] / wall[name]:.2f} (wall), "
                  f"{cpu[baseline] / cpu[name]:.2f} (CPU)")
    print(json.dumps({**settings, "items": items, "threads": torch.get_num_threads(),
                      "tasks_per_s": {n: items / wall[n] for n in wall},
                      "tasks_per_cpu_s": {n: items / cpu[n] for n in wall}}))


def adapter_cost(model: str | None, architecture: str, items: int, max_new_tokens: int, repeats: int = 3) -> None:
    """Tasks/s with the adapter merged, kept unmerged, and unmerged with base share 0.5 (best_times)."""
    with tempfile.TemporaryDirectory() as tmp:
        model = model or str(build_tiny_model(architecture, Path(tmp) / "model"))
        adapter = fresh_adapter(model, Path(tmp) / "adapter")

        def way(vlm: VLM, share: float) -> Callable[[list[Query], int], object]:
            return lambda queries, seed: vlm.sample(queries, SamplingConfig(max_new_tokens=max_new_tokens,
                                                                            base_share=share, seed=seed))

        ways = {"merged": way(VLM.load(model, adapter), 0.0),
                "unmerged": way(VLM.load(model, adapter, keep_base=True), 0.0),
                "unmerged, base share 0.5": way(VLM.load(model, adapter, keep_base=True), 0.5)}
        wall, cpu = best_times(ways, make_queries(items), repeats)
    print_rates(wall, cpu, items, 26, "merged",
                {"model": model, "max_new_tokens": max_new_tokens, "repeats": repeats})


def one_seed_per_call(vlm: VLM, queries: list[Query], config: SamplingConfig) -> int:
    """Sampling as it was before per-task seeds: one torch seed per generate call, transformers' own draw."""
    inputs = vlm.encode([q.image for q in queries], vlm.rationale_texts(queries))
    produced = 0
    for index, temperature in enumerate(config.temperatures):
        torch.manual_seed(config.seed * 1000 + index)
        texts, _ = vlm._generate(inputs, do_sample=True, temperature=temperature,
                                 top_k=vlm._top_k(config.top_k_fraction), num_return_sequences=config.per_temperature,
                                 max_new_tokens=config.max_new_tokens)
        produced += len(texts)
    return produced


def keyed_cost(model: str | None, architecture: str, items: int, max_new_tokens: int, repeats: int = 3) -> None:
    """Tasks/s of per-task seeds (VLM.sample: a generator per candidate, Gumbel-max draws) against one
    seed per generate call (best_times)."""
    with tempfile.TemporaryDirectory() as tmp:
        model = model or str(build_tiny_model(architecture, Path(tmp) / "model"))
        vlm = VLM.load(model)

        def way(sample: Callable[[VLM, list[Query], SamplingConfig], int]) -> Callable[[list[Query], int], object]:
            return lambda queries, seed: sample(vlm, queries, SamplingConfig(max_new_tokens=max_new_tokens, seed=seed))

        ways = {"one seed per generate call": way(one_seed_per_call), "a seed per task (VLM.sample)": way(batched)}
        wall, cpu = best_times(ways, make_queries(items), repeats)
    print_rates(wall, cpu, items, 28, "one seed per generate call",
                {"model": model, "max_new_tokens": max_new_tokens, "repeats": repeats})


def base_share_diversity(run: Path, shares: list[float], items: int = 100) -> None:
    from illume.images import load_local_image
    from illume.metrics import candidate_diversity
    from illume.records import Feedback, Item, read_jsonl

    report = json.loads((run / "data_efficiency.json").read_text())
    pool = list(read_jsonl(run / "data" / "val.jsonl", Item))[:items]  # the run's feedback items
    queries = [Query(load_local_image(run / "data" / i.image), i.question, i.answer) for i in pool]
    adapters = sorted(run.glob("runs/illume-[0-9]*/run/adapter"), key=lambda p: int(p.parts[-3].split("-")[1]))
    per_round: dict[float, list[float]] = {share: [] for share in shares}
    for number, adapter in enumerate([None, *adapters[:2]], start=1):
        for share in shares if adapter else [0.0]:
            vlm = VLM.load(report["demo_model"], str(adapter) if adapter else None, device="cpu", keep_base=share > 0)
            candidates = [c for start in range(0, len(queries), 40)
                          for c in vlm.sample(queries[start:start + 40], SamplingConfig(seed=number, base_share=share))]
            feedback = [Feedback(i.item_id, i.image, i.question, i.answer, [c.text for c in cands], [], [])
                        for i, cands in zip(pool, candidates)]
            diversity = candidate_diversity(feedback)["candidates_per_item"]
            for target in (shares if adapter is None else [share]):
                per_round[target].append(diversity)
            print(f"round {number} ({adapter.parts[-3] if adapter else 'model as built'}), base share {share}: "
                  f"{diversity:.2f} distinct candidates per item", flush=True)
    for share, values in per_round.items():
        print(f"base share {share}: " + " -> ".join(f"{v:.2f}" for v in values) + "; "
              + ", ".join(f"round {n} / round 1 = {v / values[0]:.2f}" for n, v in enumerate(values[1:], start=2)))
    print(json.dumps({"run": str(run), "items": len(pool), "candidates_per_item": {str(k): v for k, v in per_round.items()}}))


def offline_vs_backend(tasks: int, max_new_tokens: int) -> None:
    import base64
    import io
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from backend import Server  # benchmarks/backend.py: uvicorn in a thread

    from illume.labelstudio.client import connect
    from connector.local_label_studio import LocalLabelStudio
    from connector.offline_sampling import OfflineJob, run_offline
    from connector.predicting import predict_missing
    from connector.project import init_project, read_label_config
    from illume.labelstudio.client import LabelStudioClient
    from ml_backend.app import create_app
    from ml_backend.settings import Settings

    def png_uri(color) -> str:
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), color).save(buffer, format="PNG")
        return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()

    colours = [(220, 40, 40), (40, 160, 40), (40, 40, 220), (230, 200, 30)]
    items = [{"data": {"image": png_uri(colours[i % 4]), "question": f"what color is shape {i} ?",
                       "answer": "red", "item_id": f"i{i}", "candidates": []}} for i in range(tasks)]
    with tempfile.TemporaryDirectory() as tmp:
        model = str(build_tiny_model("llava", Path(tmp) / "model"))
        studio = LocalLabelStudio(Path(tmp) / "ls").start()
        try:
            client = connect(studio.url, studio.token)
            sampling = SamplingConfig(max_new_tokens=max_new_tokens)
            app = create_app(Settings(model=model, sampling=sampling,
                                      label_studio=LabelStudioClient(studio.url, studio.token)))
            with Server(app) as backend:
                projects = {}
                for way in ("backend", "offline"):
                    project = init_project(client, f"bench-{way}", read_label_config()).project
                    client.post(f"/api/projects/{project['id']}/import", items)
                    projects[way] = init_project(client, f"bench-{way}", read_label_config(),
                                                 backend_url=backend.url).project
                start = time.perf_counter()
                done = predict_missing(client, projects["backend"], batch_size=16)
                backend_seconds = time.perf_counter() - start
                ranks = []
                job = OfflineJob(url=studio.url, project=projects["offline"]["id"], model=model,
                                 sampling=sampling, batch_size=8)  # the backend's sampling (no adapter here)
                offline = run_offline(client, projects["offline"], job, processes=2,
                                      echo=lambda line: ranks.append(json.loads(line)) if line.startswith('{"rank"') else None)
        finally:
            studio.stop()
    sampling_seconds = max(r["sampling_seconds"] for r in ranks)
    print(f"backend path        {done.predicted:4d} tasks in {backend_seconds:7.1f} s = {done.predicted / backend_seconds:6.2f} tasks/s")
    print(f"offline, 2 processes {offline.predicted:3d} tasks in {offline.seconds:7.1f} s = "
          f"{offline.predicted / offline.seconds:6.2f} tasks/s wall (start-up + loading included); sampling part "
          f"{sampling_seconds:.1f} s = {offline.predicted / sampling_seconds:.2f} tasks/s")
    print(json.dumps({"tasks": tasks, "max_new_tokens": max_new_tokens, "backend_tasks_per_s": done.predicted / backend_seconds,
                      "offline_wall_tasks_per_s": offline.predicted / offline.seconds,
                      "offline_sampling_tasks_per_s": offline.predicted / sampling_seconds, "ranks": ranks}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=32)
    parser.add_argument("--per-temperature", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--architecture", default="llava")
    parser.add_argument("--offline", action="store_true", help="offline sharded sampling vs the backend path")
    parser.add_argument("--tasks", type=int, default=48, help="--offline: tasks per way")
    parser.add_argument("--adapter-cost", action="store_true",
                        help="tasks/s with a LoRA adapter merged vs kept unmerged (the diversity remedy)")
    parser.add_argument("--keyed-cost", action="store_true",
                        help="tasks/s with a seed per task (what VLM.sample does) vs one seed per generate call")
    parser.add_argument("--model", help="--adapter-cost, --keyed-cost: a saved model directory instead of the tiny model")
    parser.add_argument("--threads", type=int, default=1,
                        help="--adapter-cost, --keyed-cost: torch threads (1: steadier CPU time)")
    parser.add_argument("--base-share-diversity", action="store_true",
                        help="distinct candidates per item per round and base share, with a data_efficiency run's adapters")
    parser.add_argument("--run", type=Path, default=Path.home() / ".cache/illume/benchmarks/data_efficiency",
                        help="--base-share-diversity: the benchmarks/data_efficiency.py --out directory")
    parser.add_argument("--shares", default="0,0.3,0.5,0.7", help="--base-share-diversity: base shares to compare")
    args = parser.parse_args()
    if args.base_share_diversity:
        torch.set_num_threads(args.threads)
        base_share_diversity(args.run, [float(s) for s in args.shares.split(",")])
        return
    if args.adapter_cost:
        torch.set_num_threads(args.threads)
        adapter_cost(args.model, args.architecture, args.items, args.max_new_tokens)
        return
    if args.keyed_cost:
        torch.set_num_threads(args.threads)
        keyed_cost(args.model, args.architecture, args.items, args.max_new_tokens)
        return
    if args.offline:
        offline_vs_backend(args.tasks, args.max_new_tokens)
        return

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
