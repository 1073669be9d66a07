"""`illume-sync report`: one self-contained HTML page (plus PNG plots) for a run's rounds.

It reads what the rounds recorded (`rounds.json`, connector.round_step: a run of `loop` or of
`round`, i.e. Label Studio's "Start training"; an older loop's `loop.json`) and each round's
export (`feedback.jsonl`):
acceptance rate and candidate diversity per round, held-out rationale metrics and answer
accuracy per round, annotator agreement, annotator-seconds (rounds people annotated), the
preference loss's diagnostics per epoch, and example items with their candidates and ticks.
Held-out metrics are shown in one scoring mode (`--scoring`, illume.metrics): evaluations
record both, so the same run can be reported as the paper scores it.
Plots and thumbnails are embedded as data URIs, so the page can be mailed or archived alone.

The page is a list of sections (SECTIONS): each a function of the rounds that returns its HTML
parts (none when it has nothing to show), so a new section is one function added there.
"""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any, Sequence

from illume.critic import DEFAULT_SCORING
from illume.errors import IllumeError
from illume.metrics import scored_as
from illume.records import Feedback, atomic_write_text, iter_jsonl
from illume.layout import EXPORT_FEEDBACK, EXPORT_MANIFEST, RUN_STATE, ROUND_EXPORT, round_path

METRICS = (("rouge_l", "ROUGE-L"), ("cider", "CIDEr"), ("bleu_4", "BLEU-4"), ("meteor", "METEOR"),
           ("accuracy", "answer accuracy"))
EXAMPLES = 6


def load_rounds(run_dir: Path) -> dict[int, dict[str, Any]]:
    """The run's rounds by number (0: the model as built), as the round step recorded them."""
    from connector.round_step import RunState, state_path

    if state_path(run_dir) is None:
        raise IllumeError(f"{run_dir} has no {RUN_STATE}, so no round ran there",
                          "Pass the --run-dir of `illume-sync loop` or `round` (for the demo: <demo run>/loop).")
    return {int(n): record for n, record in RunState.load(run_dir).rounds_json().items()}


def _figure_png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def _diversity(record: dict[str, Any], key: str) -> float:
    """A round's candidate diversity figure (NaN where the round recorded none: no point is drawn)."""
    value = (record.get("diversity") or {}).get(key)
    return float(value) if isinstance(value, (int, float)) else float("nan")


def plots(rounds: dict[int, dict[str, Any]]) -> dict[str, bytes]:
    """PNG bytes per plot name: feedback per round, held-out metrics per round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, bytes] = {}
    fed = [n for n in rounds if n > 0 and rounds[n].get("acceptance")]
    if fed:
        figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
        left.bar([str(n) for n in fed], [100 * (rounds[n]["acceptance"].get("rate") or 0) for n in fed],
                 color="#4c72b0", label="candidates ticked")
        left.plot([str(n) for n in fed], [100 * rounds[n].get("items_with_accepted", 0) / max(1, rounds[n].get(
            "items_judged", 1)) for n in fed], "o-", color="#dd8452", label="items with an accepted rationale")
        left.set(title="Acceptance per round", xlabel="round", ylabel="%")
        left.legend(fontsize=8)
        right.plot([str(n) for n in fed], [_diversity(rounds[n], "candidates_per_item") for n in fed], "o-",
                   label="distinct candidates per item")
        right.set(title="Candidate diversity", xlabel="round", ylabel="candidates per item")
        right.set_ylim(bottom=0)
        # distinct bigrams are a share of all bigrams (a few % on a small vocabulary): their own axis
        share = right.twinx()
        share.plot([str(n) for n in fed], [100 * _diversity(rounds[n], "distinct_2") for n in fed], "s--",
                   color="#dd8452", label="distinct bigrams (% of all, right axis)")
        share.set(ylabel="distinct bigrams %")
        share.set_ylim(bottom=0)
        lines = right.get_legend_handles_labels()[0] + share.get_legend_handles_labels()[0]
        right.legend(lines, [line.get_label() for line in lines], fontsize=8)
        out["feedback"] = _figure_png(figure)
        plt.close(figure)
    measured = [n for n in rounds if rounds[n].get("metrics")]
    if measured:
        figure, axis = plt.subplots(figsize=(9, 3.4))
        for key, label in METRICS:
            values = [rounds[n]["metrics"].get(key) for n in measured]
            if all(isinstance(v, (int, float)) for v in values):
                axis.plot([str(n) for n in measured], values, "o-", label=label)
        axis.set(title="Held-out metrics per round (round 0: the model before feedback)", xlabel="round",
                 ylabel="score (0-100)")
        axis.legend(fontsize=8, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.2))
        out["metrics"] = _figure_png(figure)
        plt.close(figure)
    return out


def _thumbnail(path: Path) -> str:
    from PIL import Image

    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail((96, 96))
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
    except OSError:
        return ""
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def examples(run_dir: Path, number: int, count: int = EXAMPLES) -> list[tuple[Feedback, Path]]:
    """Items of one round: those with an accepted candidate first, then the others. A round's export
    also carries the earlier rounds' feedback; its own is that of the export's iteration."""
    export = round_path(run_dir, number) / ROUND_EXPORT
    if not (export / EXPORT_FEEDBACK).is_file():
        return []
    manifest = export / EXPORT_MANIFEST
    iteration = json.loads(manifest.read_text(encoding="utf-8")).get("iteration", number) if manifest.is_file() \
        else number
    feedback = [f for f in iter_jsonl(export / EXPORT_FEEDBACK, Feedback) if f.iteration == iteration]
    feedback.sort(key=lambda f: (not f.accepted, f.item_id))
    return [(f, export / f.image) for f in feedback[:count]]


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _num(value: Any, scale: float = 1.0) -> str:
    return f"{value * scale:.1f}" if isinstance(value, (int, float)) else "–"


def _fine(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "–"


def _preticks(preticks: dict | None) -> str:
    """Accepted candidates that were pre-ticked and left standing (automation bias), of all accepted."""
    if not preticks:
        return "–"
    return f"{preticks.get('accepted_preticked_unchanged', 0)} / {preticks.get('accepted', 0)}"


def in_scoring(rounds: dict[int, dict[str, Any]], scoring: str) -> dict[int, dict[str, Any]]:
    """The rounds with their held-out metrics as `scoring` scores them (none where not recorded)."""
    return {n: {**record, "metrics": scored_as(record["metrics"], scoring)} if record.get("metrics") else record
            for n, record in rounds.items()}


SCORING_NOTES = {"default": "default scoring: tokens are the words and numbers of the lower-cased text, accuracy "
                            "is the exact match, the rationale follows the gold answer",
                 "paper": "paper scoring (the reference implementation's): nlg-eval tokens (lower-cased, split on "
                          "spaces, punctuation attached), substring accuracy, the rationale follows the model's "
                          "own answer"}


def rounds_section(run_dir: Path, rounds: dict[int, dict[str, Any]], images: dict[str, bytes],
                   scoring: str) -> list[str]:
    summary_rows = []
    for n, record in rounds.items():
        metrics, agreement = record.get("metrics") or {}, record.get("agreement") or {}
        summary_rows.append([
            n if n else "0 (as built)", html.escape(str(record.get("sampled_by") or "–")),
            _num((record.get("acceptance") or {}).get("rate"), 100),
            _preticks(record.get("preticks")),
            f"{record.get('items_with_accepted', '–')} / {record.get('items_judged', '–')}" if n else "–",
            _num((record.get("diversity") or {}).get("candidates_per_item")),
            _num(metrics.get("rouge_l")), _num(metrics.get("cider")), _num(metrics.get("bleu_4")),
            _num(metrics.get("meteor")) if "meteor" in metrics or not metrics else "missing",
            _num(metrics.get("accuracy")),
            html.escape(str(agreement.get("fleiss_kappa") if agreement.get("fleiss_kappa") is not None else "–")),
            html.escape(str(record.get("version") or "–")) + ("" if record.get("promoted", True) else " (kept old)"),
        ])
    return ["<h2>Rounds</h2>",
            _table(["round", "candidates from", "accepted %", "accepted as untouched pre-ticks",
                    "items with accepted", "candidates / item",
                    "ROUGE-L", "CIDEr", "BLEU-4", "METEOR", "accuracy", "Fleiss κ", "trained version"],
                   summary_rows),
            f"<p class=muted>Held-out metrics: {html.escape(SCORING_NOTES[scoring])}.</p>"]


def effort_section(run_dir: Path, rounds: dict[int, dict[str, Any]], images: dict[str, bytes],
                   scoring: str) -> list[str]:
    rows = [[n, _num(e.get("annotator_seconds")), e.get("annotations_timed", "–"), e.get("accepted_rationales", "–"),
             _num(e.get("seconds_per_accepted_rationale"))]
            for n, e in ((n, r.get("effort")) for n, r in rounds.items()) if e]
    if not rows:  # only rounds people annotated (the simulator takes no time)
        return []
    return ["<h2>Annotation effort</h2>",
            _table(["round", "annotator-seconds", "annotations timed", "accepted rationales",
                    "seconds per accepted rationale"], rows)]


def diversity_section(run_dir: Path, rounds: dict[int, dict[str, Any]], images: dict[str, bytes],
                      scoring: str) -> list[str]:
    rows = [[n, _num(d.get("candidates_per_item")), _fine(d.get("distinct_2"))]
            for n, d in ((n, r.get("diversity")) for n, r in rounds.items()) if d]
    if not rows:
        return []
    return ["<h2>Candidate diversity</h2>",
            _table(["round", "distinct candidates / item", "distinct bigrams / bigrams"], rows)]


def preference_section(run_dir: Path, rounds: dict[int, dict[str, Any]], images: dict[str, bytes],
                       scoring: str) -> list[str]:
    epochs = [(n, e) for n, r in rounds.items() for e in r.get("preference") or []]
    if not epochs:  # TRL's names (illume.run_diagnostics.DPO_STATS), as the job logged them
        return []
    names = sorted({k for _, e in epochs for k in e if k != "epoch"})
    return ["<h2>Preference loss (DPO on ticked vs unticked candidates of the same item), per epoch</h2>",
            _table(["round", "epoch", *names], [[n, e.get("epoch"), *(_fine(e.get(k)) for k in names)]
                                                for n, e in epochs])]


def meteor_note(run_dir: Path, rounds: dict[int, dict[str, Any]], images: dict[str, bytes],
                scoring: str) -> list[str]:
    if not any(r.get("metrics") and "meteor" not in r["metrics"] for r in rounds.values()):
        return []
    return ["<p class=muted>METEOR missing: not computed (it needs a Java runtime where the model is evaluated; "
            "e.g. <code>apt-get install default-jre-headless</code>).</p>"]


def plots_section(run_dir: Path, rounds: dict[int, dict[str, Any]], images: dict[str, bytes],
                  scoring: str) -> list[str]:
    parts = []
    for name, title in (("feedback", "Feedback"), ("metrics", "Held-out metrics")):
        if name in images:
            data = base64.b64encode(images[name]).decode()
            parts.append(f"<h2>{title}</h2><img alt='{title} plot' src='data:image/png;base64,{data}'>")
    return parts


def examples_section(run_dir: Path, rounds: dict[int, dict[str, Any]], images: dict[str, bytes],
                     scoring: str) -> list[str]:
    parts = []
    for n in rounds:
        shown = examples(run_dir, n) if n else []
        if not shown:
            continue
        rows = []
        for feedback, image in shown:
            ticks = "".join(
                f"<li class={'yes' if c in feedback.accepted else 'no'}>{'✔' if c in feedback.accepted else '✘'} "
                f"{html.escape(c)}</li>" for c in feedback.candidates)
            ticks += "".join(f"<li class=yes>✍ {html.escape(w)}</li>" for w in feedback.written)
            thumb = _thumbnail(image)
            rows.append([f"<img class=thumb alt='item image' src='{thumb}'>" if thumb else "",
                         f"<b>{html.escape(feedback.question)}</b><br>{html.escape(feedback.answer)}",
                         f"<ul>{ticks}</ul>"])
        parts.append(f"<h2>Round {n}: examples</h2>" + _table(["image", "question / answer", "candidates"], rows))
    return parts


def annotators_section(run_dir: Path, rounds: dict[int, dict[str, Any]], images: dict[str, bytes],
                       scoring: str) -> list[str]:
    """Each annotator's agreement with gold tasks and with the majority, from the newest round's export
    (its manifest scores everything annotated by then), and who that export left out."""
    from connector.annotator_quality import TABLE_COLUMNS, annotator_table

    for number in sorted((n for n in rounds if n), reverse=True):
        manifest = round_path(run_dir, number) / ROUND_EXPORT / EXPORT_MANIFEST
        rows = annotator_table(json.loads(manifest.read_text(encoding="utf-8"))) if manifest.is_file() else []
        if rows:
            cells = [[html.escape("–" if row[c] is None else f"{row[c]:.3f}" if isinstance(row[c], float)
                                  else str(row[c])) for c in TABLE_COLUMNS] for row in rows]
            return [f"<h2>Annotators (as of round {number}'s export)</h2>", _table(TABLE_COLUMNS, cells)]
    return []


# The page's sections, in order: (run_dir, rounds, images, scoring) -> HTML parts.
SECTIONS = (rounds_section, effort_section, annotators_section, diversity_section, preference_section, meteor_note,
            plots_section, examples_section)


def render(run_dir: Path, rounds: dict[int, dict[str, Any]], images: dict[str, bytes],
           scoring: str = DEFAULT_SCORING) -> str:
    parts = [f"<h1>ILLUME run report</h1><p class=muted>{html.escape(str(run_dir))}</p>"]
    for section in SECTIONS:
        parts += section(run_dir, rounds, images, scoring)
    style = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
             "vertical-align:top;font-size:14px}th{background:#f3f3f3}.muted{color:#777}"
             "ul{margin:0;padding-left:1em;list-style:none}.yes{color:#1a7f37}.no{color:#888}"
             "img{max-width:100%}.thumb{width:96px;image-rendering:pixelated}")
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>ILLUME run report</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")


def write_report(run_dir: str | Path, out_dir: str | Path, scoring: str = DEFAULT_SCORING) -> Path:
    """Write index.html and the PNG plots into out_dir, metrics in `scoring`; returns the HTML path."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    rounds = in_scoring(load_rounds(run_dir), scoring)
    images = plots(rounds)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, data in images.items():
        (out_dir / f"{name}.png").write_bytes(data)
    page = out_dir / "index.html"
    atomic_write_text(page, render(run_dir, rounds, images, scoring))
    return page
