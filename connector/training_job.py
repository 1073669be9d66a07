"""Train on an export, gate the new adapter on held-out rationale scores and answer accuracy, reload the backend.

The training job runs as a subprocess (`python -m training`, or the `deepspeed` launcher for
several processes; see training/README.md). Promotion compares the new adapter with the
serving model on the same held-out items with the same evaluation (illume.evaluation), so
the gate never compares numbers measured differently.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence


from illume.errors import IllumeError
from illume.records import Item, read_jsonl
from illume.layout import ADAPTER_META, EXPORT_ROWS, RUN_ADAPTER



def deepspeed_launcher() -> str:
    """The `deepspeed` launcher of this environment, found without the venv being activated."""
    beside = Path(sys.executable).with_name("deepspeed")
    return str(beside) if beside.is_file() else "deepspeed"


def training_command(export: Path, base_model: str, out: Path, eval_items: Path | None = None,
                     version: str | None = None, processes: int = 1, resume: bool = False,
                     extra: Sequence[str] = (), eval_batch_size: int | None = None) -> list[str]:
    args = ["--export", str(export), "--base-model", base_model, "--out", str(out)]
    if eval_items:
        args += ["--eval-items", str(eval_items)]
    if eval_batch_size:
        args += ["--eval-batch-size", str(eval_batch_size)]
    if version:
        args += ["--model-version", version]
    if resume:
        args.append("--resume")
    args += list(extra)
    if processes > 1:
        return [deepspeed_launcher(), "--num_gpus", str(processes), "--module", "training", *args]
    return [sys.executable, "-m", "training", *args]


def run_training(command: list[str], log: Path, echo: Callable[[str], None] | None = None) -> Path:
    """Run the job to the end (its output goes to log and, line by line, to echo); the adapter dir."""
    out = Path(command[command.index("--out") + 1])
    export = Path(command[command.index("--export") + 1])
    if not (export / EXPORT_ROWS).is_file():
        raise IllumeError(f"{export} is not an export directory (no {EXPORT_ROWS})", "Run `illume-sync export` first.")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"$ {' '.join(command)}\n")
        handle.flush()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   env=dict(os.environ))
        assert process.stdout is not None
        try:
            for line in process.stdout:
                handle.write(line)
                if echo:
                    echo(line.rstrip("\n"))
        except BaseException:  # Ctrl-C, SIGTERM (the demo), an error: the job stops with its caller
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            raise
        code = process.wait()
    if code != 0:
        raise IllumeError(f"The training job failed (exit code {code})", f"See its output in {log}.")
    adapter = out / RUN_ADAPTER
    if not (adapter / ADAPTER_META).is_file():
        raise IllumeError(f"The training job finished but wrote no adapter in {adapter}", f"See its output in {log}.")
    return adapter


def read_eval_items(path: Path) -> list[Item]:
    """Held-out items (JSONL of Item), image paths resolved against the file's folder."""
    items = read_jsonl(path, Item)
    for item in items:
        if not Path(item.image).is_absolute():
            item.image = str(Path(path).parent / item.image)
    return items


def accuracy_floor(max_accuracy_drop: float | None, *references: Mapping[str, Any] | None) -> float | None:
    """The least held-out accuracy the gate accepts: the highest reference's less the allowed drop
    (None: answers are not checked, or no reference measured accuracy)."""
    measured = [float(r["accuracy"]) for r in references if r and isinstance(r.get("accuracy"), (int, float))]
    return max(measured) - max_accuracy_drop if measured and max_accuracy_drop is not None else None


def evaluate_model(base_model: str, adapter: str | None, items: list[Item],
                   batch_size: int | None = None) -> dict[str, Any]:
    """Held-out metrics of base model (+ adapter), measured as the training job measures them."""
    from illume.vlm import VLM
    from illume.evaluation import evaluate  # loads torch: only when a model is evaluated

    scores = evaluate(VLM.load(base_model, adapter=adapter), items, batch_size=batch_size)
    scores.pop("examples", None)
    return scores


def _not_finite(new: Mapping[str, Any], old: Mapping[str, Any], baseline: Mapping[str, Any] | None, metric: str,
                tolerance: float, max_accuracy_drop: float | None) -> list[str]:
    """The gate's scores and bounds that are NaN or infinite, named."""
    scores = [("new model", new), ("serving model", old)] + ([("model as built", baseline)] if baseline else [])
    named = [(f"{name}'s {key}", ref[key]) for name, ref in scores for key in (metric, "accuracy")
             if ref.get(key) is not None]
    named += [("tolerance", tolerance)] + ([("max accuracy drop", max_accuracy_drop)] if max_accuracy_drop is not None
                                           else [])
    return [f"{what} is {float(value)}" for what, value in named if not math.isfinite(float(value))]


@dataclass
class Decision:
    promote: bool
    new_score: float
    old_score: float
    reason: str


MAX_ACCURACY_DROP = 2.0  # the gate's default bound on lost answer accuracy (points; promotion.GateSettings)


def gate(new: Mapping[str, Any], old: Mapping[str, Any], metric: str, tolerance: float = 0.0,
         max_accuracy_drop: float | None = MAX_ACCURACY_DROP, baseline: Mapping[str, Any] | None = None) -> Decision:
    """Promote the new adapter when, on the same held-out items, its rationales score at least
    the serving model's (less a tolerance) and its answers lose at most max_accuracy_drop
    points of accuracy (None: answers are not checked) against the serving model and, when
    given, against `baseline` (the model as built), so that drops within the bound cannot add up
    round after round. Training on rationales can trade answers for explanations; the serving
    model's answers are what annotators judge against.
    """
    if metric not in new:
        java = " (METEOR needs a Java runtime: apt-get install default-jre-headless)" if metric == "meteor" else ""
        raise IllumeError(f"Evaluation has no metric {metric!r}{java} (has {', '.join(sorted(new))})",
                          "Pass --gate-metric with one of those.")
    new_score, old_score = float(new[metric]), float(old.get(metric) or 0.0)
    problems = _not_finite(new, old, baseline, metric, tolerance, max_accuracy_drop)
    if problems:  # NaN fails every comparison below, so it would pass them all
        return Decision(False, new_score, old_score, "; ".join(problems) + ": not a finite number, so the gate cannot "
                                                     "compare; keeping the serving model")
    if new_score + tolerance < old_score:
        problems.append(f"{metric} {new_score:.4f} is below the serving model's {old_score:.4f} (tolerance {tolerance:g})")
    references = [("serving model", old)] + ([("model as built", baseline)] if baseline not in (None, old) else [])
    references = [(name, ref) for name, ref in references if "accuracy" in new and "accuracy" in ref]
    accuracy = ""
    if references:
        accuracy = f"answer accuracy {float(new['accuracy']):.1f} (" + ", ".join(
            f"{name} {float(ref['accuracy']):.1f}" for name, ref in references) + ")"
    for name, ref in references:
        drop = round(float(ref["accuracy"]) - float(new["accuracy"]), 6)  # no float noise at the limit
        if max_accuracy_drop is not None and drop > max_accuracy_drop:
            problems.append(f"answer accuracy {float(new['accuracy']):.1f} fell by {drop:.1f} points from the {name}'s "
                            f"{float(ref['accuracy']):.1f}, more than {max_accuracy_drop:g}")
    if problems:
        return Decision(False, new_score, old_score, "; ".join(problems) + "; keeping the serving model")
    return Decision(True, new_score, old_score, f"{metric} {new_score:.4f} >= serving model's {old_score:.4f} - "
                                                f"{tolerance:g}" + (f"; {accuracy}" if accuracy else ""))
