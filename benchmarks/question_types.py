"""Where ILLUME and fine-tuning on references differ: ROUGE-L per Shapes-X question type.

Reads a finished `benchmarks/data_efficiency.py --out DIR` run and re-generates, for the model as
built, ILLUME's adapter of one iteration and the SFT arms' adapters, the rationale of every test
item exactly as the run scored it (illume.evaluation.evaluate with the run's batch size of 40: the
"all" column reproduces the run's ROUGE-L), then groups the per-item ROUGE-L by question type (the item's
meta["qtype"]). With the run's --feedback-cache it also counts, per type, the feedback items that
hold an accepted rationale after that iteration (the only items ILLUME learns rationales from), and
the items for which some candidate judged was true of the scene and supported the answer (what the
scene critic alone would have accepted: the rest of the run's critic is ROUGE-L against the references).

    python benchmarks/question_types.py --run DIR [--iteration 3] [--scoring default]

Measured 2026-12-03 on the README's runs (benchmarks/README.md, "Per question type"): ILLUME's gap
to SFT 1x sits in the types whose true candidates are worded unlike the references.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from illume.critic import SCORINGS, Subject, make_critic, rouge_l  # noqa: E402
from illume.datasets.shapes_truth import scene_of  # noqa: E402
from illume.errors import IllumeError  # noqa: E402
from illume.evaluation import evaluate  # noqa: E402
from illume.records import Feedback, Item, atomic_write_text, read_jsonl  # noqa: E402
from illume.vlm import VLM  # noqa: E402
from training.data import load_items  # noqa: E402

BATCH = 40  # as benchmarks/data_efficiency.py evaluates: the sampling seed is per batch
ALL = "all"


def qtype(item: Item) -> str:
    return item.meta.get("qtype", "unknown")


def covered_by_type(feedback_dir: Path, pool: list[Item], iteration: int,
                    true_ones: bool = False) -> dict[str, tuple[int, int]]:
    """Per question type: (feedback items with an accepted rationale after `iteration`, feedback items);
    true_ones: counting instead the items with a candidate true of the scene and supporting the answer."""
    scene = make_critic("scene") if true_ones else None
    items = {i.item_id: i for i in pool}
    covered: set[str] = set()
    judged: set[str] = set()
    for it in range(1, iteration + 1):
        path = feedback_dir / f"feedback_{it}.jsonl"
        if not path.is_file():
            raise IllumeError(f"{path} is missing: the cache holds fewer than {iteration} iterations",
                              "Pass the --feedback-cache the run was made with, or a lower --iteration.")
        for record in read_jsonl(path, Feedback):
            judged.add(record.item_id)
            item = items.get(record.item_id)
            if scene and item:
                ticks = scene.tick(record.candidates, item.explanations,
                                   Subject(item.question, item.answer, scene_of(item.meta)))
            else:
                ticks = record.accepted
            if any(ticks):
                covered.add(record.item_id)
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for item in pool:
        if item.item_id in judged:
            counts[qtype(item)][0] += item.item_id in covered
            counts[qtype(item)][1] += 1
    return {kind: (c, n) for kind, (c, n) in sorted(counts.items())}


def rouge_by_type(model: str, adapter: Path | None, items: list[Item], scoring: str) -> dict[str, float]:
    """Mean ROUGE-L (x100) of each item's evaluated rationale per question type, and over all items."""
    vlm = VLM.load(model, adapter=str(adapter) if adapter else None, device="cpu")
    evaluated = evaluate(vlm, items, batch_size=BATCH, meteor=False, scoring=scoring, also=(), keep_rationales=True)
    scores: dict[str, list[float]] = defaultdict(list)
    for item, text in zip(items, evaluated["rationales"]):
        value = rouge_l(text, item.explanations, scoring)
        scores[qtype(item)].append(value)
        scores[ALL].append(value)
    return {kind: round(100 * sum(v) / len(v), 1) for kind, v in sorted(scores.items())}


def plot(table: dict[str, dict[str, float]], covered: dict[str, tuple[int, int]], kinds: list[str], title: str,
         path: Path) -> None:
    """Grouped bars: ROUGE-L per question type and arm, each type labelled with its feedback coverage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4.3))
    width = 0.8 / len(table)
    for n, (name, scores) in enumerate(table.items()):
        ax.bar([k + n * width for k in range(len(kinds))], [scores.get(kind, 0.0) for kind in kinds], width, label=name)
    labels = [kind + (f"\n{covered[kind][0]}/{covered[kind][1]} covered" if kind in covered else "") for kind in kinds]
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(kinds))], labels)
    ax.set_ylabel("ROUGE-L")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a benchmarks/data_efficiency.py --out directory")
    parser.add_argument("--iteration", type=int, default=None, help="ILLUME's iteration (default: the run's last)")
    parser.add_argument("--scoring", choices=SCORINGS, default=SCORINGS[0])
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    run = Path(args.run)
    reports = [run / name for name in ("data_efficiency.json", "experiment.json") if (run / name).is_file()]
    if not reports:
        parser.error(f"{run} holds no data_efficiency.json or experiment.json: pass a finished run's --out")
    report = json.loads(reports[0].read_text())
    iteration = args.iteration or report["settings"]["iterations"]
    arms = {"model as built": None, f"ILLUME iteration {iteration}": run / "runs" / f"illume-{iteration}"}
    arms |= {f"SFT {d.name[4:]}": d for d in sorted((run / "runs").glob("sft-*"))}
    missing = [str(d) for d in arms.values() if d and not (d / "run" / "adapter").is_dir()]
    if missing:
        parser.error(f"no trained adapter in {', '.join(missing)}: was that arm part of the run?")
    cache = report["settings"].get("feedback_cache")
    pool = load_items(run / "data" / "val.jsonl")[: report["feedback_items"]]
    try:
        covered = covered_by_type(Path(cache), pool, iteration) if cache else {}
        true_ones = covered_by_type(Path(cache), pool, iteration, true_ones=True) if cache else {}
    except IllumeError as error:
        parser.error(str(error))
    test = load_items(run / "data" / "test.jsonl")[: report["test_items"]]
    table = {name: rouge_by_type(report["demo_model"], d / "run" / "adapter" if d else None, test, args.scoring)
             for name, d in arms.items()}
    kinds = sorted({k for scores in table.values() for k in scores} - {ALL}) + [ALL]
    sizes = {k: sum(qtype(i) == k for i in test) for k in kinds} | {ALL: len(test)}
    print(f"ROUGE-L ({args.scoring} scoring) per question type, {len(test)} test items; feedback items holding an "
          f"accepted rationale after iteration {iteration}, and with a candidate true of the scene and supporting "
          f"the answer" + ("" if cache else " (no --feedback-cache in the run)"))
    print("| type | test items | " + " | ".join(table) + " | feedback items covered | with a true candidate |")
    print("|---|---:|" + "---:|" * len(table) + "---:|---:|")

    def share(counts: dict[str, tuple[int, int]], kind: str) -> str:
        if not cache:
            return "-"
        c, n = counts.get(kind, (0, 0)) if kind != ALL else [sum(v[k] for v in counts.values()) for k in (0, 1)]
        return f"{c}/{n}"
    for kind in kinds:
        cells = " | ".join(f"{table[name].get(kind, float('nan')):.1f}" for name in table)
        print(f"| {kind} | {sizes[kind]} | {cells} | {share(covered, kind)} | {share(true_ones, kind)} |")
    out = run / f"question_types_{iteration}"
    atomic_write_text(out.with_suffix(".json"), json.dumps({
        "iteration": iteration, "scoring": args.scoring, "rouge_l": table, "feedback_covered": covered,
        "feedback_with_true_candidate": true_ones, "test_items": sizes}, indent=2))
    plot(table, covered, kinds[:-1], f"ROUGE-L per question type (seed {report['settings']['seed']}, "
         f"{len(test)} test items); feedback items covered after ILLUME iteration {iteration}", out.with_suffix(".png"))
    print(f"written to {out}.json and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
