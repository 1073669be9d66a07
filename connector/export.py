"""Label Studio JSON export -> Feedback -> training rows, preference pairs and a manifest.

The conversion streams: tasks are read one at a time (ijson) and rows are written as they
come, so memory grows with the number of distinct accepted rationales and answer-only items,
never with the size of the export. The export directory is written under a temporary name
and swapped in at the end, so a kill at any point leaves the previous export as it was.
Re-running on the same Label Studio state gives the same bytes except the manifest's time.

Rules (SPEC section 1):
  * cancelled annotations are skipped; a task without another annotation is not completed;
  * "None of these is correct" wins: an annotation that says None counts as ticking no
    candidate, whatever else is ticked (a pre-tick left standing, a slip); such conflicts are
    counted in the manifest, so nothing an annotator called wrong becomes a row or a "chosen";
  * a candidate is accepted when a strict majority of the task's annotators ticked it, or,
    with `min_agreement=K`, when at least K did;
  * pre-ticks: an annotation that started from a prediction (Label Studio's parent_prediction)
    is compared with it; the manifest counts pre-ticks kept and accepted candidates that no
    annotator ticked themselves (automation bias, visible per round);
  * every accepted candidate and every annotator-written rationale becomes a rationale row;
    items without any accepted rationale (now or in earlier iterations) get an answer-only row;
  * preference pairs: each accepted (or written) rationale against each candidate that was
    shown and not accepted, in TRL's layout (images, prompt, chosen, rejected);
  * rows and pairs of the previous export are carried over without duplicates.
"""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator

import ijson

from connector.export_images import ImageCollector
from connector.importing import task_round
from connector.project import NONE_ALIAS, NONE_CONTROL, RATIONALES_CONTROL
from illume.errors import IllumeError
from illume.prompts import rationale_prompt
from illume.records import (ANSWER_ONLY, EXPORT_FEEDBACK, EXPORT_MANIFEST, EXPORT_PAIRS, EXPORT_ROWS, RATIONALE,
                            Feedback, PreferencePair, TrainingRow, atomic_write_text, iter_jsonl, sha256_file)

CANDIDATES_FIELD = "candidates"
MANIFEST_FORMAT = 1
NONE_RULE = "'None of these is correct' wins: the annotation's ticks are dropped"


@dataclass
class ExportOptions:
    min_agreement: int | None = None  # None: strict majority of the task's annotators
    iteration: int = 0
    round: int | None = None  # export only the tasks of this labeling round (None: all tasks)
    previous: Path | None = None  # an earlier export directory to merge
    project: dict[str, Any] = field(default_factory=dict)  # {"id", "title"} for the manifest
    source: str = ""  # the Label Studio URL, for the manifest


@dataclass
class Judged:
    """One completed task: its Feedback plus what the agreement statistics need."""

    feedback: Feedback
    votes: list[dict[str, bool]]  # per annotator: candidate -> ticked
    annotators: list[Any]  # completed_by of each counted annotation
    notes: Counter = field(default_factory=Counter)  # reconciliation and pre-tick counts (NOTE_KEYS)


# What judge_task counts per task, summed into the manifest and `status`.
NOTE_KEYS = ("none_with_ticks", "annotations_from_prediction", "preticked", "preticks_kept",
             "accepted_preticked_unchanged")


@dataclass
class Vote:
    """One annotation, reconciled."""

    ticked: set[str]
    written: list[str]
    conflict: bool  # "None of these is correct" together with ticks, which were dropped (NONE_RULE)


# -- reading Label Studio tasks ----------------------------------------------------------------
def iter_tasks(stream: IO[bytes]) -> Iterator[dict]:
    """Tasks of a Label Studio JSON export (a JSON array), one at a time."""
    try:
        yield from ijson.items(stream, "item", use_float=True)
    except ijson.JSONError as exc:
        raise IllumeError(f"The Label Studio export is not valid JSON ({exc})",
                          "Export again; if it repeats, check the server's log.") from exc


def candidate_texts(data: dict) -> tuple[list[str], dict[str, str]]:
    """The task's candidate texts (in order, unique) and a map from choice value/alias to text."""
    texts: list[str] = []
    lookup: dict[str, str] = {}
    for entry in data.get(CANDIDATES_FIELD) or []:
        if isinstance(entry, dict):
            text = " ".join(str(entry.get("value", "")).split())
            alias = entry.get("alias")
        else:
            text, alias = " ".join(str(entry).split()), None
        if not text:
            continue
        if text not in lookup:
            texts.append(text)
        lookup.setdefault(text, text)
        if alias is not None:
            lookup[str(alias)] = text
    return texts, lookup


def pre_ticked(annotation: dict) -> list[str] | None:
    """Aliases pre-ticked by the prediction this annotation started from; None when it did not
    start from one (or that prediction is unknown).

    The labeling interface records the prediction it started from as `parent_prediction` (an
    id), and Label Studio stores the prediction of the project's model version that was on
    screen as the annotation's `prediction` (an object); both are in the JSON export.
    """
    parent, viewed = annotation.get("parent_prediction"), annotation.get("prediction")
    if isinstance(parent, dict):
        viewed, parent = parent, parent.get("id")
    if parent is None or not isinstance(viewed, dict) or viewed.get("id") != parent:
        return None
    return [str(c) for r in viewed.get("result") or [] if r.get("from_name") == RATIONALES_CONTROL
            for c in (r.get("value") or {}).get("choices") or []]


def annotation_choices(annotation: dict, lookup: dict[str, str]) -> Vote:
    """Ticked candidate texts and written rationales of one annotation, "None" reconciled."""
    ticked: set[str] = set()
    written: list[str] = []
    none = False
    for result in annotation.get("result") or []:
        value = result.get("value") or {}
        kind, control = result.get("type"), result.get("from_name")
        if kind == "choices" and control == NONE_CONTROL:
            none = none or NONE_ALIAS in (value.get("choices") or [])
        elif kind == "choices" and control == RATIONALES_CONTROL:
            for choice in value.get("choices") or []:
                text = lookup.get(str(choice))
                if text is not None:
                    ticked.add(text)
        elif kind == "textarea":
            for text in value.get("text") or []:
                text = " ".join(str(text).split())
                if text and text not in written:
                    written.append(text)
    conflict = none and bool(ticked)
    return Vote(set() if none else ticked, written, conflict)


def judge_task(task: dict, min_agreement: int | None = None, iteration: int = 0) -> Judged | None:
    """The Feedback of one exported task, or None when it has no completed annotation."""
    annotations = sorted((a for a in task.get("annotations") or [] if not a.get("was_cancelled")),
                         key=lambda a: a.get("id") or 0)
    if not annotations:
        return None
    data = task.get("data") or {}
    texts, lookup = candidate_texts(data)
    votes: list[dict[str, bool]] = []
    written: list[str] = []
    notes: Counter = Counter({key: 0 for key in NOTE_KEYS})
    chosen_by_hand: set[str] = set()  # ticked by someone who did not find it pre-ticked
    for annotation in annotations:
        vote = annotation_choices(annotation, lookup)
        votes.append({text: text in vote.ticked for text in texts})
        written.extend(t for t in vote.written if t not in written)
        notes["none_with_ticks"] += vote.conflict
        aliases = pre_ticked(annotation)
        pre = {lookup[a] for a in aliases or [] if a in lookup}
        notes["annotations_from_prediction"] += aliases is not None
        notes["preticked"] += len(pre)
        notes["preticks_kept"] += len(pre & vote.ticked)
        chosen_by_hand |= vote.ticked - pre
    needed = min_agreement if min_agreement is not None else len(annotations) // 2 + 1
    counts = Counter(text for vote in votes for text, ticked in vote.items() if ticked)
    accepted = [t for t in texts if counts[t] >= needed]
    notes["accepted_preticked_unchanged"] = sum(1 for t in accepted if t not in chosen_by_hand)
    feedback = Feedback(
        item_id=str(data.get("item_id") or f"task-{task.get('id')}"),
        image=str(data.get("image", "")), question=str(data.get("question", "")), answer=str(data.get("answer", "")),
        candidates=texts, accepted=accepted, rejected=[t for t in texts if t not in accepted],
        written=[w for w in written if w not in accepted],
        annotation_ids=[a.get("id") for a in annotations], annotators=len(annotations), iteration=iteration)
    completed_by = [a.get("completed_by") for a in annotations]
    completed_by = [c.get("id") if isinstance(c, dict) else c for c in completed_by]
    return Judged(feedback, votes, completed_by, notes)


def rationale_rows(feedback: Feedback) -> list[TrainingRow]:
    return [TrainingRow(RATIONALE, feedback.item_id, feedback.image, feedback.question, feedback.answer, text,
                        feedback.iteration) for text in feedback.accepted + feedback.written]


def preference_pairs(feedback: Feedback) -> list[PreferencePair]:
    prompt = rationale_prompt(feedback.question, feedback.answer)
    return [PreferencePair(feedback.item_id, [feedback.image], feedback.question, feedback.answer, prompt, good, bad)
            for good in feedback.accepted + feedback.written for bad in feedback.rejected]


def pretick_summary(notes: Counter, accepted: int) -> dict[str, Any]:
    """How much of what was accepted the annotators only left standing (automation bias)."""
    unchanged = notes["accepted_preticked_unchanged"]
    return {"annotations_from_prediction": notes["annotations_from_prediction"], "preticked": notes["preticked"],
            "kept": notes["preticks_kept"], "accepted": accepted, "accepted_preticked_unchanged": unchanged,
            "accepted_preticked_unchanged_rate": round(unchanged / accepted, 6) if accepted else None}


# -- agreement ---------------------------------------------------------------------------------
class Agreement:
    """Fleiss' kappa (any number of raters per task) and Cohen's kappa when exactly two people rated.

    The subjects are (task, candidate) decisions of tasks with two or more annotators.
    """

    def __init__(self) -> None:
        self.subjects = 0
        self.sum_p = 0.0
        self.ratings = 0
        self.ticks = 0
        self.raters: Counter[int] = Counter()
        self.pairs: dict[tuple, tuple[list[bool], list[bool]]] = {}

    def add(self, judged: Judged) -> None:
        votes = judged.votes
        self.raters[len(votes)] += 1
        if len(votes) < 2:
            return
        n = len(votes)
        for text in judged.feedback.candidates:
            yes = sum(vote[text] for vote in votes)
            self.subjects += 1
            self.sum_p += (yes * yes + (n - yes) ** 2 - n) / (n * (n - 1))
            self.ratings += n
            self.ticks += yes
        if n == 2:
            key = tuple(sorted(map(str, judged.annotators)))
            order = sorted(range(2), key=lambda i: str(judged.annotators[i]))
            first, second = self.pairs.setdefault(key, ([], []))
            for text in judged.feedback.candidates:
                first.append(votes[order[0]][text])
                second.append(votes[order[1]][text])

    def fleiss(self) -> float | None:
        if not self.subjects:
            return None
        p_yes = self.ticks / self.ratings
        expected = p_yes ** 2 + (1 - p_yes) ** 2
        observed = self.sum_p / self.subjects
        return 1.0 if expected == 1 else round((observed - expected) / (1 - expected), 6)

    def cohen(self) -> float | None:
        only_pairs = set(self.raters) - {1} == {2}
        if len(self.pairs) != 1 or not only_pairs:
            return None
        first, second = next(iter(self.pairs.values()))
        if len(set(first) | set(second)) < 2:
            return 1.0 if first == second else 0.0
        from sklearn.metrics import cohen_kappa_score

        return round(float(cohen_kappa_score(first, second)), 6)

    def summary(self) -> dict[str, Any]:
        return {"fleiss_kappa": self.fleiss(), "cohen_kappa": self.cohen(), "decisions": self.subjects,
                "annotators_per_task": {str(k): v for k, v in sorted(self.raters.items())}}


# -- writing the export directory --------------------------------------------------------------
_ENCODER = json.JSONEncoder(ensure_ascii=False, sort_keys=True)


def to_line(record: Any) -> str:
    """illume.records.to_json for our flat records, without dataclasses.asdict's deep copies (5x faster)."""
    return _ENCODER.encode(vars(record)) + "\n"


def _row_key(item_id: str, text: str) -> str:
    return f"{item_id}\x00{' '.join(text.lower().split())}"


class _ExportWriter:
    """Writes one export directory's files while tasks stream through."""

    def __init__(self, directory: Path, images: ImageCollector) -> None:
        self.directory = directory
        self.images = images
        self.rows = open(directory / EXPORT_ROWS, "w", encoding="utf-8")
        self.pairs = open(directory / EXPORT_PAIRS, "w", encoding="utf-8")
        self.feedback = open(directory / EXPORT_FEEDBACK, "w", encoding="utf-8")
        self.row_keys: set[str] = set()
        self.pair_keys: set[tuple[str, str, str]] = set()
        self.with_rationale: set[str] = set()
        self.answer_only: dict[str, TrainingRow] = {}
        self.counts = Counter()

    def add_rationale(self, row: TrainingRow, new: bool) -> None:
        key = _row_key(row.item_id, row.rationale or "")
        if key in self.row_keys:
            return
        self.row_keys.add(key)
        self.with_rationale.add(row.item_id)
        self.answer_only.pop(row.item_id, None)
        self.rows.write(to_line(row))
        self.counts["rationale_rows"] += 1
        self.counts["new_rationale_rows"] += new

    def add_pair(self, pair: PreferencePair) -> None:
        key = (pair.item_id, pair.chosen, pair.rejected)  # texts are already whitespace-normalised
        if key in self.pair_keys:
            return
        self.pair_keys.add(key)
        self.pairs.write(to_line(pair))
        self.counts["pairs"] += 1

    def note_answer_only(self, row: TrainingRow) -> None:
        if row.item_id not in self.with_rationale and row.item_id not in self.answer_only:
            self.answer_only[row.item_id] = row

    def finish(self) -> None:
        for row in self.answer_only.values():
            self.rows.write(to_line(row))
        self.counts["answer_rows"] = len(self.answer_only)
        for handle in (self.rows, self.pairs, self.feedback):
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()

    def close(self) -> None:
        for handle in (self.rows, self.pairs, self.feedback):
            handle.close()


def _carry_over(writer: _ExportWriter, previous: Path) -> None:
    """Rows and pairs of an earlier export, images copied along (paths stay relative)."""
    rows_path, pairs_path = previous / EXPORT_ROWS, previous / EXPORT_PAIRS
    if not rows_path.is_file():
        raise IllumeError(f"{previous} is not an export directory (no {EXPORT_ROWS})",
                          "Pass the directory an earlier `illume-sync export` wrote, or leave out --previous.")

    def carried(image: str) -> str:
        path = previous / image
        return writer.images.add_file(path) if path.is_file() and not Path(image).is_absolute() else image

    for row in iter_jsonl(rows_path, TrainingRow):
        row.image = carried(row.image)
        if row.kind == RATIONALE:
            writer.add_rationale(row, new=False)
        else:
            writer.note_answer_only(row)
    if pairs_path.is_file():
        for pair in iter_jsonl(pairs_path, PreferencePair):
            pair.images = [carried(image) for image in pair.images]
            writer.add_pair(pair)


def convert(tasks: Iterable[dict], out_dir: str | os.PathLike, options: ExportOptions | None = None,
            images: Callable[[Path], ImageCollector] | None = None,
            progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Write rows/pairs/feedback/manifest for these tasks into out_dir, atomically. Returns the manifest."""
    options = options or ExportOptions()
    if options.min_agreement is not None and options.min_agreement < 1:
        raise IllumeError(f"--min-agreement must be at least 1, got {options.min_agreement}",
                          "Pass the number of annotators that must tick a candidate, e.g. 2.")
    out_dir = Path(out_dir).resolve()
    previous = Path(options.previous).resolve() if options.previous else None
    if previous is not None and not previous.is_dir():
        raise IllumeError(f"Previous export {previous} does not exist", "Pass an existing export directory.")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir())
                                                       and not (out_dir / EXPORT_MANIFEST).is_file())):
        raise IllumeError(f"{out_dir} exists and is not an export directory (no {EXPORT_MANIFEST})",
                          "Choose an empty or new --out directory, or an earlier export to replace.")
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        collector = images(work) if images else ImageCollector(work)
        if previous is not None:
            collector.reuse(previous)
        manifest = _write(tasks, work, collector, options, previous, progress)
        _swap_in(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return manifest


def _write(tasks: Iterable[dict], work: Path, collector: ImageCollector, options: ExportOptions,
           previous: Path | None, progress: Callable[[int], None] | None) -> dict[str, Any]:
    writer = _ExportWriter(work, collector)
    agreement = Agreement()
    annotation_ids: list[int] = []
    seen = cancelled = candidates_shown = accepted = 0
    notes: Counter = Counter({key: 0 for key in NOTE_KEYS})
    try:
        if previous is not None:
            _carry_over(writer, previous)
        for task in tasks:
            if options.round is not None and task_round(task.get("data") or {}) != options.round:
                continue
            seen += 1
            cancelled += sum(1 for a in task.get("annotations") or [] if a.get("was_cancelled"))
            judged = judge_task(task, options.min_agreement, options.iteration)
            if progress is not None:
                progress(1)
            if judged is None:
                continue
            feedback = judged.feedback
            feedback.image = collector.add(feedback.image, context=f"task {task.get('id')}, item {feedback.item_id}")
            writer.feedback.write(to_line(feedback))
            writer.counts["completed"] += 1
            annotation_ids.extend(feedback.annotation_ids)
            agreement.add(judged)
            notes.update(judged.notes)
            candidates_shown += len(feedback.candidates)
            accepted += len(feedback.accepted)
            for row in rationale_rows(feedback):
                writer.add_rationale(row, new=True)
            for pair in preference_pairs(feedback):
                writer.add_pair(pair)
            if not feedback.accepted and not feedback.written:
                writer.note_answer_only(TrainingRow(ANSWER_ONLY, feedback.item_id, feedback.image, feedback.question,
                                                    feedback.answer, None, feedback.iteration))
        if not writer.counts["completed"]:
            project = options.project.get("title") or options.project.get("id") or "the project"
            raise IllumeError(f"Nothing to export: {project!s} has no completed task ({seen} tasks exported, "
                              f"{cancelled} cancelled annotations)",
                              "Annotate tasks in Label Studio (or run `illume-sync annotate --simulate`), then export.")
        writer.finish()
    except BaseException:
        writer.close()
        raise
    counts = dict(writer.counts)
    rationale, answer = counts.get("rationale_rows", 0), counts.get("answer_rows", 0)
    files = {name: sha256_file(work / name) for name in (EXPORT_ROWS, EXPORT_PAIRS, EXPORT_FEEDBACK)}
    images = {f"images/{p.name}": sha256_file(p) for p in sorted(collector.images.iterdir())}
    manifest = {
        "format": MANIFEST_FORMAT,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "label_studio": options.source,
        "project": options.project,
        "iteration": options.iteration,
        "round": options.round,
        "acceptance": {"rule": "majority" if options.min_agreement is None else f"at least {options.min_agreement}",
                       "candidates_shown": candidates_shown, "accepted": accepted,
                       "rate": round(accepted / candidates_shown, 6) if candidates_shown else None},
        "agreement": agreement.summary(),
        "reconciliation": {"rule": NONE_RULE, "none_with_ticks": notes["none_with_ticks"]},
        "preticks": pretick_summary(notes, accepted),
        "counts": {"tasks": seen, "completed": counts.get("completed", 0), "cancelled_annotations": cancelled,
                   "annotations": len(annotation_ids), "rationale_rows": rationale,
                   "new_rationale_rows": counts.get("new_rationale_rows", 0), "answer_rows": answer,
                   "pairs": counts.get("pairs", 0), "images": len(images)},
        "rationale_weight": answer / rationale if rationale and answer else 1.0,
        "previous_export": str(previous) if previous else None,
        "annotation_ids": sorted(annotation_ids),
        "files": files,
        "images": images,
    }
    atomic_write_text(work / EXPORT_MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    _fsync_dir(work)
    return manifest


# -- atomic directory replacement -------------------------------------------------------------
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    return result == 0


def _swap_in(work: Path, target: Path) -> None:
    if not target.exists():
        os.rename(work, target)
        _fsync_dir(target.parent)
        return
    if not target.is_dir() or (not (target / EXPORT_MANIFEST).exists() and any(target.iterdir())):
        raise IllumeError(f"{target} exists and is not an export directory", "Choose another --out directory.")
    if _exchange(work, target):
        shutil.rmtree(work)  # now holds the old export
    else:
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.rename(target, old)
        os.rename(work, target)
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(target.parent)


def _remove_stale_temporaries(target: Path) -> None:
    """Leftovers of a killed export (never the export itself)."""
    for stale in target.parent.glob(f".{target.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for old in target.parent.glob(f".{target.name}.old-*"):
        if not target.exists():
            os.rename(old, target)  # killed between the two renames: restore the previous export
        else:
            shutil.rmtree(old, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
