"""Does `export --min-annotator-quality` make the training rows of a crowd cleaner?

A live Label Studio project of Shapes-X items (--gold-share of them gold) gets candidates made
from each item's reference explanations and from those references with a colour, size or
direction word swapped (true and false statements, checked against the scene); then, through
the real commands:

    illume-sync init --overlap PER_TASK
    illume-sync import --gold-share S items.jsonl
    illume-sync annotate --simulate --annotators 5 --per-task PER_TASK --error-rate 0.05,0.05,0.05,0.05,0.5
    illume-sync export --out plain
    illume-sync export --out filtered --min-annotator-quality Q

Both exports read the same annotations (same simulated crowd, same seed). Accepted-row precision:
the share of the export's rationale rows that are true of their scene and support the answer
(illume.datasets.shapes_truth, the Shapes-X scene truth); recall: the share of the true candidates
that became rows. Prints both exports' figures and each annotator's quality.

    python benchmarks/annotator_quality.py [--items 300] [--seed 0]   # starts a local Label Studio
    python benchmarks/annotator_quality.py --url URL --api-key KEY --data-dir DIR   # a running one

Measured 2026-12-02 on this machine, defaults (300 Shapes-X tasks, 61 gold; 1500 candidates, 600
true of their scene; 5 annotators, 3 per task, error rates 0.05 x 4 and 0.5; seed 0; 900 annotations):

    export                                   rows  true  precision  recall  completed tasks
    without --min-annotator-quality           616   578     0.9383  0.9633  300
    with --min-annotator-quality 0.8          570   566     0.9930  0.9433  300
    left out: 175 annotations of simulated-annotator-4 (gold agreement 0.476 on 34 gold tasks;
    the four careful ones 0.924-0.969)

False rows fall from 38 to 4; the tasks the careless annotator was on are judged by the other two
(strict majority: both), so 12 true rows are lost with the 34 false ones.

Every annotator on every task (--per-task 5, the rest the same; 1500 annotations): a majority of
five already outvotes one careless annotator most of the time, and the option still halves what
is left: precision 0.9867 -> 0.9966 (false rows 8 -> 2), recall 0.9900 -> 0.9850; 300 annotations
of simulated-annotator-4 left out (gold agreement 0.489; the others 0.938-0.951).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from illume.datasets import shapes  # noqa: E402
from illume.datasets.shapes_truth import judge  # noqa: E402
from illume.records import Item, TrainingRow, read_jsonl  # noqa: E402

SWAP = {"red": "green", "green": "blue", "blue": "purple", "purple": "yellow", "yellow": "red", "large": "small",
        "small": "large", "big": "small", "left": "right", "right": "left", "above": "below", "below": "above",
        "circle": "square", "square": "triangle", "triangle": "diamond", "diamond": "circle"}


@dataclass
class CrowdSettings:
    items: int = 300
    gold_share: float = 0.2
    annotators: int = 5
    per_task: int = 3
    error_rates: str = "0.05,0.05,0.05,0.05,0.5"
    min_quality: float = 0.8
    seed: int = 0


def true_of_scene(text: str, item: Item) -> bool:
    return judge(text, item.question, item.answer, item.meta["scene"]).accepted


def candidates_for(item: Item, most: int = 5) -> list[str]:
    """Up to `most` candidates: two of the references (true) and the references with words swapped
    (mostly false), de-duplicated; what the scene truth says of each is checked later, not assumed."""
    swapped = [" ".join(SWAP.get(w, w) for w in ref.split()) for ref in item.explanations]
    texts: list[str] = []
    for text in item.explanations[:2] + swapped:
        if text not in texts:
            texts.append(text)
    return texts[:most]


def cli(*args: str, url: str, token: str) -> dict:
    """One `illume-sync` command, in this process; its --json result."""
    from click.testing import CliRunner

    from connector.cli import main

    result = CliRunner().invoke(main, [*args, "--url", url, "--api-key", token, "--json"], catch_exceptions=False)
    if result.exit_code != 0:
        raise RuntimeError(f"illume-sync {' '.join(args)} failed ({result.exit_code}): {result.output[-2000:]}")
    return json.loads(result.stdout[result.stdout.index("{"):])


def precision(export: Path, items: dict[str, Item]) -> dict:
    rows = [r for r in read_jsonl(export / "rows.jsonl", TrainingRow) if r.kind == "rationale"]
    true = sum(true_of_scene(r.rationale or "", items[r.item_id]) for r in rows)
    return {"rows": len(rows), "true_rows": true, "precision": round(true / len(rows), 4) if rows else None}


def run_crowd(url: str, token: str, files_root: Path, work: Path, settings: CrowdSettings,
              title: str = "annotator-quality") -> dict:
    """The experiment of the module doc on the Label Studio at url; its figures."""
    from illume.labelstudio.client import connect

    client = connect(url, token)
    items = shapes.generate(files_root / title, seed=settings.seed, sizes={"train": settings.items})["train"]
    by_id = {item.item_id: item for item in items}
    project = cli("init", "--project", title, "--overlap", str(settings.per_task), url=url, token=token)["project"]
    imported = cli("import", "--project", str(project), "--local-files-root", str(files_root), "--gold-share",
                   str(settings.gold_share), str(files_root / title / "train.jsonl"), url=url, token=token)
    shown = truly = 0
    for task in client.pages("/api/tasks", {"project": project, "fields": "all"}, page_size=500):
        item = by_id[task["data"]["item_id"]]
        texts = candidates_for(item)
        shown += len(texts)
        truly += sum(true_of_scene(t, item) for t in texts)
        client.patch(f"/api/tasks/{task['id']}", {"data": {**task["data"], "candidates": [
            {"value": t, "alias": f"c{k}"} for k, t in enumerate(texts)]}})
    started = time.monotonic()
    annotated = cli("annotate", "--simulate", "--project", str(project), "--annotators", str(settings.annotators),
                    "--per-task", str(settings.per_task), "--error-rate", settings.error_rates, "--seed",
                    str(settings.seed), url=url, token=token)
    annotate_s = time.monotonic() - started
    plain = cli("export", "--project", str(project), "--out", str(work / "plain"), url=url, token=token)
    filtered = cli("export", "--project", str(project), "--out", str(work / "filtered"), "--min-annotator-quality",
                   str(settings.min_quality), url=url, token=token)
    status = cli("status", "--project", str(project), url=url, token=token)
    users = {str(u.id): u.email for u in client.sdk.users.list()}
    return {"settings": vars(settings), "project": project, "gold_tasks": imported["gold"],
            "candidates_shown": shown, "candidates_true": truly, "annotations": annotated["annotations"],
            "annotate_seconds": round(annotate_s, 1),
            "without": {**precision(work / "plain", by_id), "completed": plain["counts"]["completed"]},
            "with": {**precision(work / "filtered", by_id), "completed": filtered["counts"]["completed"],
                     "excluded_annotators": [users.get(str(a), a) for a in
                                             filtered["annotator_quality"]["excluded_annotators"]],
                     "excluded_annotations": filtered["annotator_quality"]["excluded_annotations"]},
            "annotators": {users.get(who, who): {k: f[k] for k in ("tasks", "gold_tasks", "gold_agreement",
                                                                   "majority_agreement", "quality", "basis")}
                           for who, f in status["annotator_quality"]["annotators"].items()}}


def report(figures: dict) -> str:
    s, without, with_ = figures["settings"], figures["without"], figures["with"]
    true = figures["candidates_true"]
    lines = [f"{s['items']} Shapes-X tasks ({figures['gold_tasks']} gold), {figures['candidates_shown']} candidates "
             f"({true} true of their scene); {s['annotators']} simulated annotators, {s['per_task']} per task, "
             f"error rates {s['error_rates']}, seed {s['seed']}: {figures['annotations']} annotations "
             f"({figures['annotate_seconds']} s)",
             "", "export                                   rows  true  precision  recall  completed tasks"]
    for name, f in (("without --min-annotator-quality", without),
                    (f"with --min-annotator-quality {s['min_quality']}", with_)):
        recall = round(f["true_rows"] / true, 4) if true else None
        lines.append(f"{name:<40} {f['rows']:>4}  {f['true_rows']:>4}  {f['precision']!s:>9}  {recall!s:>6}  "
                     f"{f['completed']}")
    lines.append(f"left out: {with_['excluded_annotations']} annotations of {with_['excluded_annotators']}")
    lines += ["", "annotator                              tasks  gold tasks  gold agr.  majority agr.  quality"]
    for who, f in sorted(figures["annotators"].items()):
        lines.append(f"{who:<38} {f['tasks']:>5}  {f['gold_tasks']:>10}  {f['gold_agreement']!s:>9}  "
                     f"{f['majority_agreement']!s:>13}  {f['quality']} ({f['basis']})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = CrowdSettings()
    for name, value in vars(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument("--url", help="a running Label Studio (default: start one)")
    parser.add_argument("--api-key")
    parser.add_argument("--data-dir", type=Path, help="with --url: its LOCAL_FILES_DOCUMENT_ROOT")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    settings = CrowdSettings(**{name: getattr(args, name) for name in vars(defaults)})
    with tempfile.TemporaryDirectory(prefix="annotator-quality-") as tmp:
        if args.url:
            figures = run_crowd(args.url, args.api_key, args.data_dir, Path(tmp), settings,
                                title=f"annotator-quality-{int(time.time())}")
        else:
            from connector.local_label_studio import LocalLabelStudio

            with LocalLabelStudio(Path(tmp) / "label-studio") as server:
                figures = run_crowd(server.url, server.token, server.data_dir, Path(tmp), settings)
    print(json.dumps(figures, indent=1) if args.json else report(figures))


if __name__ == "__main__":
    main()
