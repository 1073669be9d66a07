"""Writing one export directory while judged tasks stream through: rows, pairs, feedback,
images and the manifest (what export.convert swaps in atomically).

  * every accepted candidate and every annotator-written rationale becomes a rationale row;
  * answer-only rows: with an AnswerPool (the method's way, SPEC section 1), drawn at random from all
    the project's items (every task streamed, any round, annotated or not: imported items carry their
    answers) that have no accepted rationale, never held-out items, about `ratio` x the rationale
    rows; without one, every annotated item without an accepted rationale (now or earlier) gets one;
  * preference pairs: each accepted (or written) rationale against each candidate that was
    shown and not accepted, in TRL's layout (images, prompt, chosen, rejected);
  * unticked.jsonl: each candidate shown and not accepted, as a rationale row (the undesirable
    side of an unpaired loss; connector.export_trl writes TRL's unpaired layout from it);
  * rows and pairs of the previous export are carried over without duplicates, except those of a
    task judged again here: its judgment now (an annotation edited since, say) replaces the earlier one;
  * a task not shaped as Label Studio writes tasks (connector.task_shape) is left out and reported;
  * a task whose image the image policy refuses (a disallowed host, outside the allowed roots,
    too large) is left out and reported in the manifest, with nothing fetched or copied; so is a
    carried row or pair whose image is not an image file in the previous export's images/ folder;
  * the annotations of excluded annotators (below the quality threshold) are left out of a task's
    judgment, while its completeness still counts everyone (the manifest's "annotator_quality").
"""
from __future__ import annotations

import json
import os
import random
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from connector.agreement import Agreement
from connector.export_images import ImageCollector
from illume.labelstudio.task import task_item_id, task_round
from connector.annotator_quality import annotator_id
from connector.task_shape import FIX_TASK, task_problem
from connector.judging import (NONE_RULE, NOTE_KEYS, Judged, judge_task, latest_per_annotator, preference_pairs,
                               pretick_summary, rationale_rows, unticked_rows)
from illume.atomic_dir import fsync_dir
from illume.errors import IllumeError
from illume.labeling_schema import LabelingSchema
from illume.records import (ANSWER_ONLY, RATIONALE, Feedback, PreferencePair, TrainingRow, atomic_write_text,
                            iter_jsonl, sha256_file)
from illume.layout import EXPORT_FEEDBACK, EXPORT_MANIFEST, EXPORT_PAIRS, EXPORT_ROWS, EXPORT_UNTICKED
from illume.text import check_text

MANIFEST_FORMAT = 1
PART = ".part"  # this export's own rows while the earlier export's are carried ahead of them


_ENCODER = json.JSONEncoder(ensure_ascii=False, sort_keys=True)


def to_line(record: Any) -> str:
    """illume.records.to_json for our flat records, without dataclasses.asdict's deep copies (5x faster)."""
    return _ENCODER.encode(record.to_json_object() if hasattr(record, "to_json_object") else vars(record)) + "\n"


@dataclass(frozen=True)
class AnswerPool:
    """How answer-only rows are drawn from the project's items (issue 22: answers are kept)."""

    ratio: float = field(default=10.0, metadata={"help": (
        "answer-only rows per rationale row, drawn from all the project's items without an accepted "
        "rationale (capped by how many there are); the method's run used about 10")})
    seed: int = field(default=0, metadata={"help": "seed of the draw (with the iteration: a new draw each round)"})

    def __post_init__(self) -> None:
        if not self.ratio >= 0:
            raise IllumeError(f"the answer pool's ratio must be a number >= 0, got {self.ratio}",
                              "Pass e.g. 10 (the method's), or 0 for no answer-only rows from the pool.")

    def size(self, rationale_rows: int, available: int) -> int:
        """ratio x the rationale rows (as if one when there are none: a round where nothing was accepted
        still trains answers), capped by the available items."""
        return min(available, round(self.ratio * max(rationale_rows, 1)))

    def draw(self, items: Iterable[str], with_rationale: set[str], held_out: frozenset[str], rationale_rows: int,
             iteration: int) -> tuple[list[str], dict[str, Any]]:
        """(sorted item ids drawn for answer-only rows, what the manifest records): a seeded draw, new
        each iteration, from `items` without an accepted rationale, never a held-out one."""
        items = set(items)
        eligible = sorted(i for i in items if i not in with_rationale and i not in held_out)
        # The method draws from items without an accepted rationale; a project smaller than ratio x the
        # rationale rows tops the draw up with the other items (their answer is learnt on its own too),
        # so answers keep their weight in the loss. Measured on the demo: docs/retention.md.
        top_up = sorted(i for i in items if i in with_rationale and i not in held_out)
        rng = random.Random(self.seed * 1_000_003 + iteration)
        size = self.size(rationale_rows, len(eligible) + len(top_up))
        drawn = rng.sample(eligible, min(size, len(eligible)))
        drawn += rng.sample(top_up, size - len(drawn))
        return sorted(drawn), {"source": "project", "ratio": self.ratio, "seed": self.seed,
                               "project_items": len(items), "held_out_excluded": len(items & held_out),
                               "with_rationale": len(items & with_rationale), "eligible": len(eligible)}


def _row_key(item_id: str, text: str) -> str:
    return f"{item_id}\x00{' '.join(text.lower().split())}"


class ExportWriter:
    """Writes one export directory's files while tasks stream through."""

    def __init__(self, directory: Path, images: ImageCollector) -> None:
        self.directory = directory
        self.images = images
        # This export's rows, pairs and unticked rows stream into part files; the earlier export's,
        # carried after this export's tasks were read, go ahead of them in the files (earlier first).
        self.names = (EXPORT_ROWS, EXPORT_PAIRS, EXPORT_UNTICKED)
        self.rows, self.pairs, self.unticked = (open(directory / f"{n}{PART}", "w", encoding="utf-8") for n in self.names)
        self.parts: tuple | None = None  # the part files, once the final files are written
        self.feedback = open(directory / EXPORT_FEEDBACK, "w", encoding="utf-8")
        self.row_keys: set[str] = set()
        self.earlier_keys: set[str] = set()  # rationale rows of the previous export: not new here
        self.held: dict[str, TrainingRow] = {}  # this export's rows of an earlier row's text (add_rationale)
        # (task, row key) -> iteration, of the previous export's rows: a task judged again keeps the
        # iteration in which a row it still gives was first accepted (or first left unticked)
        self.earlier_iterations: dict[tuple[str, Any, str], int] = {}
        self.unticked_keys: set[str] = set()
        self.pair_keys: set[tuple[str, str, str]] = set()
        self.with_rationale: set[str] = set()
        self.answer_only: dict[str, TrainingRow] = {}
        self.pool: dict[str, tuple[Any, TrainingRow]] = {}  # item id -> (task id, answer row): AnswerPool's choice
        self.counts = Counter()
        self.task_ids: list[int] = []  # the completed tasks of this export (not carried-over ones)

    @staticmethod
    def _first(keys: set, key: Any) -> bool:
        """True the first time `key` is seen in `keys` (and remembers it): rows and pairs are written once."""
        if key in keys:
            return False
        keys.add(key)
        return True

    def add_rationale(self, row: TrainingRow, new: bool) -> None:
        key = _row_key(row.item_id, row.rationale or "")
        if key in self.row_keys or (new and key in self.held):
            return
        self.with_rationale.add(row.item_id)
        self.answer_only.pop(row.item_id, None)
        if new and key in self.earlier_keys:
            # The earlier export's row of this text goes first and keeps its iteration; this one only
            # stands if that one is not carried (its task judged again here): release_held decides.
            self.held[key] = row
            return
        self.row_keys.add(key)
        row.iteration = self.earlier_iterations.get((RATIONALE, row.task_id, key), row.iteration)
        self.rows.write(to_line(row))
        self.counts["rationale_rows"] += 1
        self.counts["new_rationale_rows"] += new and key not in self.earlier_keys

    def add_unticked(self, row: TrainingRow) -> None:
        key = _row_key(row.item_id, row.rationale or "")
        if self._first(self.unticked_keys, key):
            row.iteration = self.earlier_iterations.get(("unticked", row.task_id, key), row.iteration)
            self.unticked.write(to_line(row))
            self.counts["unticked_rows"] += 1

    def add_pair(self, pair: PreferencePair) -> None:
        # texts are already whitespace-normalised
        if not self._first(self.pair_keys, (pair.item_id, pair.chosen, pair.rejected)):
            return
        self.pairs.write(to_line(pair))
        self.counts["pairs"] += 1

    def note_answer_only(self, row: TrainingRow) -> None:
        if row.item_id not in self.with_rationale and row.item_id not in self.answer_only:
            self.answer_only[row.item_id] = row

    def release_held(self) -> None:
        """This export's rows held back for an earlier row of the same text that was not carried."""
        held, self.held = self.held, {}
        for row in held.values():
            self.add_rationale(row, new=False)

    def carry_first(self) -> None:
        """From now on rows, pairs and unticked rows go to the final files, ahead of this export's."""
        if self.parts is None:
            self.parts = (self.rows, self.pairs, self.unticked)
            self.rows, self.pairs, self.unticked = (open(self.directory / n, "w", encoding="utf-8") for n in self.names)

    def finish(self) -> None:
        self.carry_first()
        self.release_held()
        for final, part in zip((self.rows, self.pairs, self.unticked), self.parts):
            part.close()
            with open(part.name, encoding="utf-8") as handle:
                shutil.copyfileobj(handle, final)
            os.unlink(part.name)
        for row in self.answer_only.values():
            self.rows.write(to_line(row))
        self.counts["answer_rows"] = len(self.answer_only)
        for handle in (self.rows, self.pairs, self.feedback, self.unticked):
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()

    def close(self) -> None:
        for handle in (self.rows, self.pairs, self.feedback, self.unticked, *(self.parts or ())):
            handle.close()


def pool_row(task: dict, schema: LabelingSchema, iteration: int, max_chars: int) -> TrainingRow | None:
    """The answer-only row a task's item would give (any task: annotated or not), None when incomplete."""
    data = task.get("data") or {}
    item_id = task_item_id(task)
    image, question, answer = (str(data.get(key) or "") for key in (schema.image, schema.question, schema.answer))
    if not (image and question.strip() and answer.strip()):
        return None
    try:
        for name, value in (("item_id", item_id), ("question", question), ("answer", answer)):
            check_text(value, f"task {str(task.get('id'))[:40]}: its {name}", max_chars)
    except IllumeError:
        return None
    return TrainingRow(ANSWER_ONLY, item_id, image, question, answer, None, iteration)


def draw_answer_pool(writer: ExportWriter, pool: AnswerPool, held_out: frozenset[str], iteration: int,
                     tally: "Tally") -> dict[str, Any]:
    """Replace the writer's answer-only rows with the pool's draw (images collected, a refused one leaves
    out its item only); what the manifest records."""
    drawn, record = pool.draw(writer.pool, writer.with_rationale, held_out, writer.counts["rationale_rows"],
                              iteration)
    writer.answer_only = {}
    for item_id in drawn:
        task_id, row = writer.pool[item_id]
        try:
            row.image = writer.images.add(row.image, task_id=task_id)
        except IllumeError as exc:  # this item only: nothing was fetched or copied for it
            tally.refused_images.append({"task": task_id, "item_id": item_id, "reason": exc.what, "todo": exc.todo})
            continue
        writer.answer_only[item_id] = row
    kept = writer.answer_only
    return {**record, "topped_up": sum(1 for i in kept if i in writer.with_rationale), "drawn": len(kept)}


def earlier_export(previous: Path) -> Path:
    """`previous`, checked to be an export directory (before any task is read)."""
    if not (previous / EXPORT_ROWS).is_file():
        raise IllumeError(f"{previous} is not an export directory (no {EXPORT_ROWS})",
                          "Pass the directory an earlier `illume-sync export` wrote, or leave out --previous.")
    return previous


def remember_earlier(writer: ExportWriter, previous: Path) -> None:
    """Which rationale rows the earlier export holds (not new here), and when each row of a task was made."""
    for row in iter_jsonl(previous / EXPORT_ROWS, TrainingRow):
        if row.kind == RATIONALE:
            key = _row_key(row.item_id, row.rationale or "")
            writer.earlier_keys.add(key)
            if row.task_id is not None:
                writer.earlier_iterations[(RATIONALE, row.task_id, key)] = row.iteration
    if (previous / EXPORT_UNTICKED).is_file():
        for row in iter_jsonl(previous / EXPORT_UNTICKED, TrainingRow):
            if row.task_id is not None:
                writer.earlier_iterations[("unticked", row.task_id, _row_key(row.item_id, row.rationale or ""))] = \
                    row.iteration


def carry_over(writer: ExportWriter, previous: Path, tally: "Tally") -> None:
    """The earlier export's rows and pairs, images copied along (paths stay relative), but none of a task
    judged in this export: what its annotations say now replaces what they said then. (Rows of exports
    written before rows named their task are all carried.) A row or pair whose image is not an image
    file in the earlier export's images/ folder is left out and reported. Called after this export's tasks."""
    judged_now = set(writer.task_ids)
    writer.carry_first()

    def carried(record: TrainingRow | PreferencePair, file: str) -> bool:
        """Points the record at its images in this export; False (reported) when one is refused."""
        images = record.images if isinstance(record, PreferencePair) else [record.image]
        try:
            moved = [writer.images.carry(previous, image) for image in images]
        except IllumeError as exc:  # this record only is left out
            tally.refused_images.append({"task": record.task_id, "item_id": str(record.item_id)[:200],
                                         "carried_from": str(previous / file), "reason": exc.what, "todo": exc.todo})
            return False
        if isinstance(record, PreferencePair):
            record.images = moved
        else:
            record.image = moved[0]
        return True

    for row in iter_jsonl(previous / EXPORT_ROWS, TrainingRow):
        if row.task_id in judged_now or not carried(row, EXPORT_ROWS):
            continue
        if row.kind == RATIONALE:
            writer.add_rationale(row, new=False)
        else:
            writer.note_answer_only(row)
    writer.release_held()  # after the carried rows: a text accepted again keeps its first row
    if (previous / EXPORT_PAIRS).is_file():
        for pair in iter_jsonl(previous / EXPORT_PAIRS, PreferencePair):
            if pair.task_id not in judged_now and carried(pair, EXPORT_PAIRS):
                writer.add_pair(pair)
    if (previous / EXPORT_UNTICKED).is_file():
        for row in iter_jsonl(previous / EXPORT_UNTICKED, TrainingRow):
            if row.task_id not in judged_now and carried(row, EXPORT_UNTICKED):
                writer.add_unticked(row)


@dataclass
class Tally:
    """What the manifest reports besides the writer's counts."""

    seen: int = 0
    cancelled: int = 0
    below_min_annotations: int = 0  # annotated, not yet by enough people: left for a later export
    candidates_shown: int = 0
    accepted: int = 0
    annotation_ids: list[int] = field(default_factory=list)
    notes: Counter = field(default_factory=lambda: Counter({key: 0 for key in NOTE_KEYS}))
    agreement: Agreement = field(default_factory=Agreement)
    refused_images: list[dict[str, Any]] = field(default_factory=list)
    refused_texts: list[dict[str, Any]] = field(default_factory=list)
    refused_tasks: list[dict[str, Any]] = field(default_factory=list)  # not shaped as Label Studio writes tasks
    answer_pool: dict[str, Any] = field(default_factory=dict)  # where the answer-only rows came from
    excluded_annotations: int = 0  # submitted annotations of excluded annotators left out of complete tasks
    tasks_with_excluded_annotations: int = 0
    tasks_left_without_votes: int = 0  # complete tasks only excluded annotators had voted on


def exclusion_summary(excluded: frozenset, tally: Tally) -> dict[str, Any]:
    """What the manifest's "annotator_quality" says about the annotations left out."""
    return {"excluded_annotators": sorted(excluded, key=str), "excluded_annotations": tally.excluded_annotations,
            "tasks_with_excluded_annotations": tally.tasks_with_excluded_annotations,
            "tasks_left_without_votes": tally.tasks_left_without_votes}


def write_export(tasks: Iterable[dict], work: Path, collector: ImageCollector, options: Any, schema: LabelingSchema,
                 previous: Path | None, progress: Callable[[int], None] | None) -> dict[str, Any]:
    """Write the files of one export into `work` (a fresh directory) and return its manifest."""
    writer = ExportWriter(work, collector)
    tally = Tally()
    pool: AnswerPool | None = getattr(options, "answer_pool", None)  # connector.export_project.ProjectExportOptions
    held_out: frozenset[str] = getattr(options, "held_out", frozenset())  # item ids never given answer-only rows
    excluded: frozenset = getattr(options, "excluded_annotators", frozenset())  # Label Studio user ids
    quality: Callable[[], dict[str, Any]] | None = getattr(options, "annotator_quality", None)
    try:
        if previous is not None:
            remember_earlier(writer, earlier_export(previous))
        for task in tasks:
            if progress is not None:  # every task read, so the bar reaches the snapshot's size
                progress(1)
            problem = task_problem(task, schema)
            if problem is not None:
                tally.refused_tasks.append({"task": task.get("id") if isinstance(task, dict) else None,
                                            "reason": problem[:500], "todo": FIX_TASK})
                continue
            if pool is not None:
                row = pool_row(task, schema, options.iteration, options.max_text_chars)
                if row is not None and row.item_id not in writer.pool:
                    writer.pool[row.item_id] = (task.get("id"), row)
            if options.round is not None and task_round(task.get("data") or {}) != options.round:
                continue
            _add_task(task, writer, tally, options, schema, excluded)
        if previous is not None:
            carry_over(writer, previous, tally)
        if not writer.counts["completed"]:
            raise _nothing_to_export(options, tally)
        if pool is not None:
            tally.answer_pool = draw_answer_pool(writer, pool, held_out, options.iteration, tally)
        else:
            writer.answer_only = {k: v for k, v in writer.answer_only.items() if k not in held_out}
            tally.answer_pool = {"source": "annotated", "drawn": len(writer.answer_only)}
        writer.finish()
    except BaseException:
        writer.close()
        raise
    manifest = _manifest(work, writer, tally, options, previous)
    if quality is not None or excluded:  # called once every task was read: the scores may be observed on the way
        manifest["annotator_quality"] = {**(quality() if quality is not None else {}),
                                         **exclusion_summary(excluded, tally)}
    atomic_write_text(work / EXPORT_MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    fsync_dir(work)
    return manifest


def _add_task(task: dict, writer: ExportWriter, tally: Tally, options: Any, schema: LabelingSchema,
              excluded: frozenset = frozenset()) -> None:
    tally.seen += 1
    annotations = task.get("annotations") or []
    tally.cancelled += sum(1 for a in annotations if a.get("was_cancelled"))
    submitted = sorted((a for a in annotations if not a.get("was_cancelled")), key=lambda a: a.get("id") or 0)
    if not submitted:
        return
    # Complete counting everyone (one per person), excluded annotators too: their task is then judged
    # by the votes of the rest instead of waiting for more people.
    if len(latest_per_annotator(submitted)) < options.min_annotations:
        tally.below_min_annotations += 1
        return
    kept = [a for a in submitted if annotator_id(a) not in excluded]
    if len(kept) < len(submitted):
        tally.excluded_annotations += len(submitted) - len(kept)
        tally.tasks_with_excluded_annotations += 1
        tally.tasks_left_without_votes += not kept
        task = {**task, "annotations": kept}
    judged = judge_task(task, schema, options.min_agreement, options.iteration)
    if judged is None:  # only excluded annotators voted
        return
    feedback = judged.feedback
    if not (feedback.image and feedback.question.strip() and feedback.answer.strip()):
        tally.refused_tasks.append({"task": task.get("id"), "item_id": feedback.item_id[:200],
                                    "reason": f"task {task.get('id')} has no image, question or answer", "todo": FIX_TASK})
        return
    try:  # this task only: a text the tokenizer cannot take (too long, not Unicode) leaves it out
        check_texts(feedback, f"task {str(task.get('id'))[:40]}", options.max_text_chars)
    except IllumeError as exc:
        tally.refused_texts.append({"task": task.get("id"), "item_id": feedback.item_id[:200], "reason": exc.what,
                                    "todo": exc.todo})
        return
    try:
        feedback.image = writer.images.add(feedback.image, task_id=task.get("id"))
    except IllumeError as exc:  # this task only: nothing was fetched or copied for it
        tally.refused_images.append({"task": task.get("id"), "item_id": feedback.item_id, "reason": exc.what,
                                     "todo": exc.todo})
        return
    writer.feedback.write(to_line(feedback))
    writer.counts["completed"] += 1
    task_id = task["id"]
    writer.task_ids.append(task_id)
    _tally(tally, judged)
    for row in rationale_rows(feedback):
        row.task_id = task_id
        writer.add_rationale(row, new=True)
    for pair in preference_pairs(feedback):
        pair.task_id = task_id
        writer.add_pair(pair)
    for row in unticked_rows(feedback):
        row.task_id = task_id
        writer.add_unticked(row)
    if not feedback.accepted and not feedback.written:
        writer.note_answer_only(TrainingRow(ANSWER_ONLY, feedback.item_id, feedback.image, feedback.question,
                                            feedback.answer, None, feedback.iteration, task_id))


def check_texts(feedback: Feedback, task: str, max_chars: int) -> None:
    """Every text of a judged task that would reach the tokenizer: bounded in length (training never
    truncates) and valid Unicode (the files are UTF-8). Control characters pass: a model's own
    candidates may hold them, and JSON escapes them."""
    texts = [("its item_id", feedback.item_id), ("its question", feedback.question), ("its answer", feedback.answer)]
    texts += [(f"candidate {n}", value) for n, value in enumerate(feedback.candidates, 1)]
    texts += [(f"written rationale {n}", value) for n, value in enumerate(feedback.written, 1)]
    for name, value in texts:
        check_text(value, f"{task}: {name}", max_chars, control_characters=True)


def _tally(tally: Tally, judged: Judged) -> None:
    tally.annotation_ids.extend(judged.feedback.annotation_ids)
    tally.agreement.add(judged)
    tally.notes.update(judged.notes)
    tally.candidates_shown += len(judged.feedback.candidates)
    tally.accepted += len(judged.feedback.accepted)


def _nothing_to_export(options: Any, tally: Tally) -> IllumeError:
    project = options.project.get("title") or options.project.get("id") or "the project"
    refused = (f", {len(tally.refused_images)} left out because their image was refused (first: "
               f"{tally.refused_images[0]['reason']})" if tally.refused_images else "")
    refused += (f", {len(tally.refused_tasks)} left out as unreadable (first: {tally.refused_tasks[0]['reason']})"
                if tally.refused_tasks else "")
    waiting = (f", {tally.below_min_annotations} annotated by fewer than {options.min_annotations} people"
               if tally.below_min_annotations else "")
    return IllumeError(f"Nothing to export: {project!s} has no completed task ({tally.seen} tasks exported, "
                       f"{tally.cancelled} cancelled annotations{waiting}{refused})",
                       tally.refused_images[0]["todo"] if tally.refused_images else
                       "Annotate tasks in Label Studio (or run `illume-sync annotate --simulate`), then export.")


def _manifest(work: Path, writer: ExportWriter, tally: Tally, options: Any, previous: Path | None) -> dict[str, Any]:
    counts = dict(writer.counts)
    rationale, answer = counts.get("rationale_rows", 0), counts.get("answer_rows", 0)
    images = {f"images/{p.name}": sha256_file(p) for p in sorted(writer.images.images.iterdir())}
    shown, accepted = tally.candidates_shown, tally.accepted
    return {
        "format": MANIFEST_FORMAT,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "label_studio": options.source,
        "project": options.project,
        "iteration": options.iteration,
        "round": options.round,
        "acceptance": {"rule": "majority" if options.min_agreement is None else f"at least {options.min_agreement}",
                       "candidates_shown": shown, "accepted": accepted,
                       "rate": round(accepted / shown, 6) if shown else None},
        "agreement": tally.agreement.summary(),
        "reconciliation": {"rule": NONE_RULE, "none_with_ticks": tally.notes["none_with_ticks"],
                           "repeat_annotations": tally.notes["repeat_annotations"]},
        "preticks": pretick_summary(tally.notes, accepted),
        "counts": {"tasks": tally.seen, "completed": counts.get("completed", 0),
                   "cancelled_annotations": tally.cancelled, "annotations": len(tally.annotation_ids),
                   "below_min_annotations": tally.below_min_annotations, "min_annotations": options.min_annotations,
                   "rationale_rows": rationale, "new_rationale_rows": counts.get("new_rationale_rows", 0),
                   "answer_rows": answer, "pairs": counts.get("pairs", 0),
                   "unticked_rows": counts.get("unticked_rows", 0), "images": len(images),
                   "refused_images": len(tally.refused_images), "refused_texts": len(tally.refused_texts),
                   "refused_tasks": len(tally.refused_tasks)},
        "refused_images": tally.refused_images,
        "refused_texts": tally.refused_texts,
        "refused_tasks": tally.refused_tasks,
        "rationale_weight": answer / rationale if rationale and answer else 1.0,
        "answer_pool": tally.answer_pool,
        "previous_export": str(previous) if previous else None,
        "annotation_ids": sorted(tally.annotation_ids),
        "task_ids": sorted(writer.task_ids),
        "files": {name: sha256_file(work / name) for name in (EXPORT_ROWS, EXPORT_PAIRS, EXPORT_FEEDBACK, EXPORT_UNTICKED)},
        "images": images,
    }
