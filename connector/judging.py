"""Judging one exported Label Studio task: its annotations' votes -> Feedback (SPEC section 1).

  * cancelled annotations are skipped; a task without another annotation is not completed;
  * one vote per person: an annotator's latest annotation replaces their earlier ones;
  * "None of these is correct" wins: an annotation that says None counts as ticking no
    candidate, whatever else is ticked (a pre-tick left standing, a slip); such conflicts are
    counted, so nothing an annotator called wrong becomes a row or a "chosen";
  * a candidate is accepted when a strict majority of the task's annotators ticked it, or,
    with `min_agreement=K`, when at least K did;
  * pre-ticks: an annotation that started from a prediction (Label Studio's parent_prediction)
    is compared with it; pre-ticks kept and accepted candidates that no annotator ticked
    themselves are counted (automation bias, visible per round).
Control and field names come from the project's labeling schema (illume.labeling_schema).
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from illume.labeling_schema import LabelingSchema, shipped_schema
from illume.records import Feedback, PreferencePair, TrainingRow, RATIONALE
from illume.labelstudio.candidates import retired_options, task_options, unseen_aliases
from illume.labelstudio.task import task_item_id

NONE_RULE = "'None of these is correct' wins: the annotation's ticks are dropped"


@dataclass
class Judged:
    """One completed task: its Feedback plus what the agreement statistics need."""

    feedback: Feedback
    votes: list[dict[str, bool]]  # per annotator: candidate -> ticked
    annotators: list[Any]  # completed_by of each counted annotation
    notes: Counter = field(default_factory=Counter)  # reconciliation and pre-tick counts (NOTE_KEYS)


# What judge_task counts per task, summed into the manifest and `status`.
NOTE_KEYS = ("none_with_ticks", "repeat_annotations", "annotations_from_prediction", "preticked", "preticks_kept",
             "accepted_preticked_unchanged")


@dataclass
class Vote:
    """One annotation, reconciled."""

    ticked: set[str]
    written: list[str]
    conflict: bool  # "None of these is correct" together with ticks, which were dropped (NONE_RULE)


def candidate_texts(data: dict, schema: LabelingSchema) -> tuple[list[str], dict[str, str]]:
    """The task's candidate texts (in order, unique) and a map from choice value/alias to text."""
    texts: list[str] = []
    lookup: dict[str, str] = {}
    for option in task_options(data, schema):
        if option.text not in lookup:
            texts.append(option.text)
        lookup.setdefault(option.text, option.text)
        lookup[option.alias] = option.text
    return texts, lookup


def pre_ticked(annotation: dict, schema: LabelingSchema) -> list[str] | None:
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
    return [c for r in viewed.get("result") or [] for kind, values in [schema.read(r)] if kind == "ticks"
            for c in values]


def annotation_choices(annotation: dict, lookup: dict[str, str], schema: LabelingSchema) -> Vote:
    """Ticked candidate texts and written rationales of one annotation, "None" reconciled."""
    ticked: set[str] = set()
    written: list[str] = []
    none = False
    for result in annotation.get("result") or []:
        kind, values = schema.read(result)
        if kind == "none":
            none = True
        elif kind == "ticks":
            ticked.update(lookup[choice] for choice in values if choice in lookup)
        elif kind == "text":
            for text in values:
                text = " ".join(text.split())
                if text and text not in written:
                    written.append(text)
    conflict = none and bool(ticked)
    return Vote(set() if none else ticked, written, conflict)


def judge_task(task: dict, schema: LabelingSchema | None = None, min_agreement: int | None = None,
               iteration: int = 0) -> Judged | None:
    """The Feedback of one exported task, or None when it has no completed annotation."""
    schema = schema or shipped_schema()
    submitted = sorted((a for a in task.get("annotations") or [] if not a.get("was_cancelled")),
                       key=lambda a: a.get("id") or 0)
    if not submitted:
        return None
    annotations = latest_per_annotator(submitted)
    data = task.get("data") or {}
    texts, lookup = candidate_texts(data, schema)
    # Options appended after an annotation (a later model version, illume.labelstudio.candidates) were
    # not shown to it: the task is judged on those every annotator saw, plus any ticked.
    unseen = {lookup[a] for annotation in annotations for a in unseen_aliases(task, annotation) if a in lookup}
    # Options a rewrite took off before anyone judged the task: ticked on a page still showing them,
    # they mean their text; nobody else saw them.
    retired = {alias: " ".join(text.split()) for alias, text in retired_options(task.get("meta")).items()
               if alias not in lookup and text.strip()}
    lookup.update(retired)
    taken_off = [text for text in dict.fromkeys(retired.values()) if text not in texts]
    texts += taken_off
    unseen |= set(taken_off)
    votes: list[dict[str, bool]] = []
    written: list[str] = []
    notes: Counter = Counter({key: 0 for key in NOTE_KEYS})
    notes["repeat_annotations"] = len(submitted) - len(annotations)
    chosen_by_hand: set[str] = set()  # ticked by someone who did not find it pre-ticked
    choices = [annotation_choices(annotation, lookup, schema) for annotation in annotations]
    texts = [t for t in texts if t not in unseen or any(t in vote.ticked for vote in choices)]
    for annotation, vote in zip(annotations, choices):
        votes.append({text: text in vote.ticked for text in texts})
        written.extend(t for t in vote.written if t not in written)
        notes["none_with_ticks"] += vote.conflict
        aliases = pre_ticked(annotation, schema)
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
        item_id=task_item_id(task),
        image=str(data.get(schema.image) or ""), question=str(data.get(schema.question) or ""),
        answer=str(data.get(schema.answer) or ""),
        candidates=texts, accepted=accepted, rejected=[t for t in texts if t not in accepted],
        written=[w for w in written if w not in accepted],
        annotation_ids=[a.get("id") for a in annotations], annotators=len(annotations), iteration=iteration,
        lead_times=[_seconds(a.get("lead_time")) for a in submitted])  # time spent, replaced annotations too
    completed_by = [a.get("completed_by") for a in annotations]
    completed_by = [c.get("id") if isinstance(c, dict) else c for c in completed_by]
    return Judged(feedback, votes, completed_by, notes)


def latest_per_annotator(annotations: list[dict]) -> list[dict]:
    """One vote per person: an annotator's latest annotation of a task (by id) replaces their
    earlier ones (Label Studio lets a user add several). Annotations without completed_by all count."""
    latest: dict[Any, dict] = {}
    for number, annotation in enumerate(annotations):
        who = annotation.get("completed_by")
        who = who.get("id") if isinstance(who, dict) else who
        latest[("user", who) if who is not None else ("annotation", number)] = annotation
    kept = {id(a) for a in latest.values()}
    return [a for a in annotations if id(a) in kept]


def _seconds(value: Any) -> float | None:
    """An annotation's lead_time as Label Studio reports it (seconds spent on it), or None."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def rationale_rows(feedback: Feedback) -> list[TrainingRow]:
    return [TrainingRow(RATIONALE, feedback.item_id, feedback.image, feedback.question, feedback.answer, text,
                        feedback.iteration) for text in feedback.accepted + feedback.written]


def unticked_rows(feedback: Feedback) -> list[TrainingRow]:
    """The candidates shown and not accepted, as rationale rows (the undesirable side of an unpaired loss)."""
    return [TrainingRow(RATIONALE, feedback.item_id, feedback.image, feedback.question, feedback.answer, text,
                        feedback.iteration) for text in feedback.rejected]


def preference_pairs(feedback: Feedback) -> list[PreferencePair]:
    return [PreferencePair(feedback.item_id, [feedback.image], feedback.question, feedback.answer, good, bad)
            for good in feedback.accepted + feedback.written for bad in feedback.rejected]


def pretick_summary(notes: Counter, accepted: int) -> dict[str, Any]:
    """How much of what was accepted the annotators only left standing (automation bias)."""
    unchanged = notes["accepted_preticked_unchanged"]
    return {"annotations_from_prediction": notes["annotations_from_prediction"], "preticked": notes["preticked"],
            "kept": notes["preticks_kept"], "accepted": accepted, "accepted_preticked_unchanged": unchanged,
            "accepted_preticked_unchanged_rate": round(unchanged / accepted, 6) if accepted else None}
