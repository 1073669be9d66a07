"""Training throughput and memory: the DeepSpeed job vs a plain PyTorch loop, and ZeRO 0/2/3.

    python benchmarks/training.py [--steps 30] [--batch-size 8] [--repeats 2]

1. samples/s and peak RSS of the DeepSpeed job (ZeRO 0, one process) against a plain
   PyTorch loop with the same tiny LLaVA, LoRA adapter, export, batch and loss. Each
   runs in its own process (peak RSS is per process). samples/s = batch / median time of
   a micro-batch (batch building + forward + backward + optimizer), which is robust to the
   load of other work on a shared machine; the best of --repeats is kept.
   Floor: DeepSpeed >= 0.85x the plain loop's samples/s.
2. Peak RSS per rank of the DeepSpeed job (`python -m training` under the deepspeed launcher,
   the product's code path) with 2 ranks under ZeRO 0, 2, 3 and 3 + --offload, one after the
   other, on a randomly initialised LLaVA of the tests' family whose language model is scaled
   up (--layers x --hidden, MLP 4x hidden; 36 x 2048 = 1.97 B parameters, 7.5 GB in fp32) so
   that weights dominate. The model is built once under --model-cache and reused. Two figures
   per rank: the peak once the model is loaded and the engine is ready ("loaded"), and the
   peak of the whole run (loading + --zero-steps optimizer steps + checkpoint + adapter save).
   Must show: ZeRO 3's run peak <= 0.6x ZeRO 0's; losses of every stage within 1e-4 of
   ZeRO 0's at every step on both ranks. ZeRO 0 and 2 need about 8.4 GB per rank at the
   default size (17 GB for the two ranks); --stages 0,3 runs only what the floor compares.
Exits 1 when a floor is missed.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Run as a script, this file's folder comes first on sys.path and its name would hide the
# `training` package: look in the repository instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(REPO))
from connector.training_job import deepspeed_launcher  # noqa: E402
from illume.ports import free_port  # noqa: E402

FLOOR = 0.85
ZERO3_MEMORY_FLOOR = 0.6  # ZeRO 3's per-rank run peak / ZeRO 0's
LOSS_TOLERANCE = 1e-4
DEFAULT_CACHE = Path.home() / ".cache" / "illume" / "benchmarks" / "training"


def make_export(directory: Path, items: int) -> Path:
    from PIL import Image

    from illume.records import ANSWER_ONLY, RATIONALE, TrainingRow, write_jsonl

    (directory / "images").mkdir(parents=True, exist_ok=True)
    colors = ("red", "blue", "green", "yellow")
    rows = []
    for index in range(items):
        color = colors[index % 4]
        Image.new("RGB", (40, 40), color).save(directory / f"images/{index}.png")
        rows.append(TrainingRow(ANSWER_ONLY, f"i{index}", f"images/{index}.png", "what color is the square ?", color))
        rows.append(TrainingRow(RATIONALE, f"i{index}", f"images/{index}.png", "what color is the square ?", color,
                                rationale=f"the square on the left of the image is {color}."))
    write_jsonl(directory / "rows.jsonl", rows)
    return directory


# ---------------------------------------------------------------------- workers (own process)
def plain_worker(export: str, model: str, batch_size: int, steps: int, lr: float) -> dict:
    """The same model, adapter, batches and loss, trained by torch.optim.AdamW directly."""
    import copy
    import resource

    import torch

    from illume.vlm import VLM
    from training.data import BatchBuilder, load_export, model_inputs, shard_batches
    from training.losses import illume_loss
    from training.model import add_lora

    torch.manual_seed(0)
    data = load_export(export)
    base = VLM.load(model, device="cpu", dtype="float32")
    builder = BatchBuilder(copy.deepcopy(base.processor))
    net = add_lora(base.model)
    net.train()
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=lr, betas=(0.9, 0.99),
                                  weight_decay=0.2)
    micro_seconds, step, epoch = [], 0, 0
    while step < steps:
        for indices in shard_batches(len(data.rows), batch_size, 1, 0, 0, epoch):
            tick = time.perf_counter()
            batch = builder.rows([data.rows[i] for i in indices], data.rationale_weight)
            loss = illume_loss(net(**model_inputs(batch)).logits, batch["labels"], batch["loss_weight"])
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in net.parameters() if p.requires_grad], 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            micro_seconds.append(time.perf_counter() - tick)
            step += 1
            if step >= steps:
                break
        epoch += 1
    return {"samples_per_second": batch_size / statistics.median(micro_seconds),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def deepspeed_worker(export: str, model: str, batch_size: int, steps: int, lr: float, out: str) -> dict:
    from training import TrainConfig, run

    result = run(TrainConfig(export=export, base_model=model, out=out, batch_size=batch_size, epochs=1000,
                             max_steps=steps, lr=lr, zero=0, seed=0))
    return {"samples_per_second": batch_size / statistics.median(result.micro_seconds), "peak_rss_mb": result.peak_rss_mb}


def _in_subprocess(kind: str, **kwargs) -> dict:
    done = subprocess.run([sys.executable, __file__, "--worker", kind, json.dumps(kwargs)], cwd=REPO,
                          capture_output=True, text=True, timeout=1200)
    if done.returncode != 0:
        raise SystemExit(f"{kind} worker failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def build_large_llava(out: Path, layers: int, hidden: int) -> tuple[Path, int]:
    """The tiny LLaVA's processor and vision tower, its language model scaled to layers x hidden,
    random weights, saved like any checkpoint; (directory, parameter count). A directory built
    before is reused (built under a temporary name, so a complete one or none)."""
    import torch
    from transformers import AutoConfig, LlavaForConditionalGeneration

    from illume.atomic_dir import remove_stale_temporaries, swap_in, temporary_beside
    from illume.tiny_models import build_tiny_model

    count_file = out / "parameters.txt"
    if count_file.is_file():
        return out, int(count_file.read_text())
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    tmp = temporary_beside(out)
    build_tiny_model("llava", tmp)
    config = AutoConfig.from_pretrained(tmp)
    text = config.text_config
    text.hidden_size, text.intermediate_size, text.num_hidden_layers = hidden, 4 * hidden, layers
    text.num_attention_heads = text.num_key_value_heads = max(1, hidden // 64)
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config)
    count = sum(p.numel() for p in model.parameters())
    model.save_pretrained(tmp)
    del model
    (tmp / "parameters.txt").write_text(str(count))
    swap_in(tmp, out)
    return out, count


def zero_memory(export: Path, model: Path, work: Path, stage: int, batch_size: int, steps: int,
                offload: bool = False) -> list[dict]:
    out = work / f"zero{stage}{'-offload' if offload else ''}"
    command = [deepspeed_launcher(), "--num_gpus", "2", "--master_port", str(free_port()), "--module", "training",
               "--export", str(export), "--base-model", str(model), "--out", str(out), "--zero", str(stage),
               "--batch-size", str(batch_size), "--epochs", "1000", "--max-steps", str(steps), "--seed", "0"]
    command += ["--offload"] if offload else []
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"ZeRO {stage} run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return [json.loads(p.read_text()) for p in sorted((out / "ranks").glob("rank_*.json"))]


def zero_report(zero: dict[str, list[dict]]) -> tuple[float, float]:
    """Print the per-stage table; (ZeRO 3's run peak / ZeRO 0's, largest loss gap to ZeRO 0)."""
    def peak(name: str, key: str) -> float:
        return max(r[key] for r in zero[name])

    print(f"  {'stage':<16} {'loaded (rank 0 / 1)':>20} {'run (rank 0 / 1)':>18} {'loaded vs 0':>12} {'run vs 0':>9}")
    for name, ranks in zero.items():
        loaded = " / ".join(f"{r['peak_rss_loaded_mb']:.0f}" for r in ranks)
        run = " / ".join(f"{r['peak_rss_mb']:.0f}" for r in ranks)
        print(f"  ZeRO {name:<11} {loaded + ' MB':>20} {run + ' MB':>18} "
              f"{peak(name, 'peak_rss_loaded_mb') / peak('0', 'peak_rss_loaded_mb'):11.3f}x "
              f"{peak(name, 'peak_rss_mb') / peak('0', 'peak_rss_mb'):8.3f}x")
    gap = 0.0
    for name, ranks in zero.items():
        for rank, reference in zip(ranks, zero["0"]):
            if len(rank["losses"]) != len(reference["losses"]):
                return peak("3", "peak_rss_mb") / peak("0", "peak_rss_mb"), float("inf")
            gap = max([gap] + [abs(a - b) for a, b in zip(rank["losses"], reference["losses"])])
    print(f"  losses (rank 0): {[round(x, 6) for x in zero['0'][0]['losses']]}; largest gap of any stage to "
          f"ZeRO 0, any rank and step: {gap:.1e} (tolerance {LOSS_TOLERANCE:.0e})")
    return peak("3", "peak_rss_mb") / peak("0", "peak_rss_mb"), gap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--items", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--layers", type=int, default=36, help="language model layers of the large random model")
    parser.add_argument("--hidden", type=int, default=2048, help="its hidden size (intermediate: 4x)")
    parser.add_argument("--model-cache", type=Path, default=DEFAULT_CACHE,
                        help="where the large random model is built once and reused (default: %(default)s)")
    parser.add_argument("--zero-steps", type=int, default=3, help="optimizer steps of each ZeRO memory run")
    parser.add_argument("--zero-batch-size", type=int, default=1,
                        help="micro batch of the ZeRO memory runs (small: activations do not shrink with ZeRO)")
    parser.add_argument("--skip-throughput", action="store_true", help="only the ZeRO memory runs")
    parser.add_argument("--stages", default="0,2,3,3+offload",
                        help="ZeRO memory runs, comma-separated (0 and 3 are needed for the floor; default: %(default)s)")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, kwargs = args.worker[0], json.loads(args.worker[1])
        print(json.dumps((plain_worker if kind == "plain" else deepspeed_worker)(**kwargs)))
        return

    from illume.tiny_models import build_tiny_model

    with tempfile.TemporaryDirectory(prefix="illume-bench-") as tmp:
        work = Path(tmp)
        model = build_tiny_model("llava", work / "model")
        export = make_export(work / "export", args.items)
        common = dict(export=str(export), model=str(model), batch_size=args.batch_size, steps=args.steps, lr=args.lr)
        runs: dict[str, list[dict]] = {"plain": [], "deepspeed": []}
        ratio = None
        for repeat in range(0 if args.skip_throughput else args.repeats):  # alternate: both see the same load
            runs["plain"].append(_in_subprocess("plain", **common))
            runs["deepspeed"].append(_in_subprocess("deepspeed", out=str(work / f"ds{repeat}"), **common))
        if runs["plain"]:
            best = {k: max(v, key=lambda r: r["samples_per_second"]) for k, v in runs.items()}
            ratio = best["deepspeed"]["samples_per_second"] / best["plain"]["samples_per_second"]
            print(f"tiny LLaVA + LoRA r8, batch {args.batch_size}, {args.steps} steps, CPU, best of {args.repeats}")
            for kind in ("plain", "deepspeed"):
                print(f"  {kind:<10} {best[kind]['samples_per_second']:8.1f} samples/s   peak RSS "
                      f"{best[kind]['peak_rss_mb']:7.0f} MB   (all runs: "
                      f"{', '.join('%.1f' % r['samples_per_second'] for r in runs[kind])})")
            print(f"  DeepSpeed / plain throughput: {ratio:.2f}x (floor {FLOOR}x) -> "
                  f"{'OK' if ratio >= FLOOR else 'BELOW FLOOR'}", flush=True)

        large, count = build_large_llava(args.model_cache / f"llava-{args.layers}x{args.hidden}", args.layers,
                                         args.hidden)
        print(f"ZeRO stages, 2 ranks, random LLaVA with {count / 1e6:.0f} M parameters "
              f"({count * 4 / 2**20:.0f} MB in fp32, {large}), batch {args.zero_batch_size}, "
              f"{args.zero_steps} steps: peak RSS per rank", flush=True)
        zero = {}
        stages = [(int(name.split("+")[0]), name.endswith("+offload")) for name in args.stages.split(",")]
        if not {(0, False), (3, False)} <= set(stages):
            parser.error("--stages must include 0 and 3 (the floor compares them)")
        for stage, offload in stages:  # one at a time
            zero[f"{stage}{' + offload' if offload else ''}"] = zero_memory(export, large, work, stage,
                                                                         args.zero_batch_size, args.zero_steps, offload)
        memory_ratio, loss_gap = zero_report(zero)
        print(f"  ZeRO 3 / ZeRO 0 run peak per rank: {memory_ratio:.3f}x (floor {ZERO3_MEMORY_FLOOR}x) -> "
              f"{'OK' if memory_ratio <= ZERO3_MEMORY_FLOOR else 'ABOVE FLOOR'}; losses "
              f"{'agree' if loss_gap <= LOSS_TOLERANCE else 'DISAGREE'}")
        keys = ("rank", "peak_rss_mb", "peak_rss_loaded_mb", "samples_per_second", "losses")
        print(json.dumps({"plain": runs["plain"], "deepspeed": runs["deepspeed"], "ratio": ratio, "parameters": count,
                          "zero3_memory_ratio": memory_ratio, "loss_gap": loss_gap,
                          "zero": {s: [{k: r[k] for k in keys} for r in rs] for s, rs in zero.items()}}))
        if (ratio is not None and ratio < FLOOR) or memory_ratio > ZERO3_MEMORY_FLOOR or loss_gap > LOSS_TOLERANCE:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
