"""What a Label Studio task holds, one definition for every reader and writer.

A task's data: the image, question, answer and candidates under the names the project's
labeling config gives them (illume.labeling_schema), plus `item_id`, `split` and `round`.
Reference explanations (and a Shapes-X scene) go into its `meta`, out of the annotators' view.
From a task the backend and offline sampling build a model query (`task_query`) and a
prediction (`prediction`); candidates are read and written by illume.labelstudio.candidates.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from illume.errors import IllumeError
from illume.images import ImagePolicy, ImageSource, check_image, storage_ref
from illume.labeling_schema import LabelingSchema, parse_schema, shipped_schema
from illume.records import Candidate, Item
from illume.text import MAX_TEXT_CHARS
from illume.text import check_text as check_text_value

if TYPE_CHECKING:
    from illume.vlm import Query

SHOWN_ID_CHARS = 40  # of a task's id, in errors and the log


def task_data(item: Item, image_url: str, schema: LabelingSchema, round_: int = 1) -> dict:
    """One task to import: shown data, and the references kept out of the annotators' view."""
    return {"data": {schema.image: image_url, schema.question: item.question, schema.answer: item.answer,
                     schema.candidates: [], "item_id": item.item_id, "split": item.split, "round": round_},
            "meta": {"references": list(item.explanations),  # + a Shapes-X scene, for the scene critic
                     **({"scene": item.meta["scene"]} if "scene" in item.meta else {})}}


def task_round(data: dict) -> int:
    """The labeling round a task belongs to (tasks imported without one are round 1)."""
    try:
        return int(data.get("round") or 1)
    except (TypeError, ValueError, OverflowError):  # OverflowError: Python's JSON reads 1e999 as inf
        return 1


def item_key(data: dict) -> tuple[str, int] | None:
    """What makes a task unique in a project: its item in its labeling round."""
    return (str(data["item_id"]), task_round(data)) if data.get("item_id") is not None else None


def task_item_id(task: dict) -> str:
    """The item a task shows (tasks imported without an item id are named after the task)."""
    return str((task.get("data") or {}).get("item_id") or f"task-{task.get('id')}")


def task_references(task: dict) -> list[str]:
    """A task's reference explanations (in `meta`; tasks imported by earlier versions kept them in data)."""
    meta = task.get("meta") if isinstance(task.get("meta"), dict) else {}
    found = meta.get("references") or (task.get("data") or {}).get("references") or []
    return [str(r) for r in found if r]


def parse_label_config(xml: str | None) -> LabelingSchema:
    """The labeling schema of a /predict request's config (the shipped config when none is sent)."""
    if not xml or not xml.strip():
        return shipped_schema()
    return parse_schema(xml, " sent by Label Studio")


@dataclass(frozen=True)
class PendingQuery:
    """A task's checked inputs. Its image is fetched later (in the download pool) and decoded only
    when its model batch runs, so a large request never holds all its images at once."""

    image: ImageSource
    question: str
    answer: str
    key: str = ""  # what its sampling draws are seeded by (sampling_key)

    def fetch(self) -> bytes:
        return self.image.fetch()

    def build(self, data: bytes) -> "Query":
        from illume.vlm import Query  # torch: loaded by those that run the model only

        return Query(image=self.image.decode(data), question=self.question, answer=self.answer, key=self.key)


def sampling_key(task: dict[str, Any], fields: LabelingSchema) -> str:
    """A task's candidates are drawn from its id and the options it already holds, whatever batch it
    is sampled in: asked again, an open task gets the same candidates; asked for more (resample: the
    task holds more options by then), new ones. A task without an id is keyed by its content."""
    tid = task_id(task)
    if tid is None:
        return ""
    offered = (task.get("data") or {}).get(fields.candidates)
    return f"task {tid} after {len(offered) if isinstance(offered, list) else 0} options"


def task_name(task: Any) -> str:
    """How errors and the log name a task ("task 7"); an id with control characters is shown
    escaped (repr), so that it cannot forge a log line."""
    if not isinstance(task, dict):
        return "task ?"
    shown = str(task.get("id"))[:SHOWN_ID_CHARS]
    return f"task {shown if shown.isprintable() else repr(shown)[:SHOWN_ID_CHARS * 2]}"


def check_text(task: dict[str, Any], key: str, value: str, max_chars: int) -> str:
    return check_text_value(value, f"{task_name(task)}: field {key!r}", max_chars)


def task_query(task: dict[str, Any], fields: LabelingSchema, policy: ImagePolicy,
               max_text_chars: int = MAX_TEXT_CHARS) -> PendingQuery:
    """The checked inputs for one task (no I/O yet); an IllumeError says which field is missing or bad."""
    data = task.get("data") if isinstance(task, dict) else None
    if not isinstance(data, dict):
        raise IllumeError(f"{task_name(task)} has no data", "Import tasks with a data object.")
    values = {}
    for key in (fields.image, fields.question, fields.answer):
        value = data.get(key)
        fix = f"Import tasks whose data has {fields.image!r}, {fields.question!r} and {fields.answer!r} as text."
        if value is not None and not isinstance(value, str):
            raise IllumeError(f"{task_name(task)}: field {key!r} must be text, got {type(value).__name__}", fix)
        if not value or not value.strip():
            raise IllumeError(f"{task_name(task)}: field {key!r} is missing or empty", fix)
        values[key] = value.strip()
    question, answer = (check_text(task, key, values[key], max_text_chars) for key in (fields.question, fields.answer))
    image = check_image(storage_ref(values[fields.image], task_id(task)), policy)  # cloud URIs via Label Studio
    return PendingQuery(image=image, question=question, answer=answer, key=sampling_key(task, fields))


def prediction(options: list[dict[str, str]], candidates: Sequence[Candidate], fields: LabelingSchema,
               version: str, preselect: int) -> dict[str, Any]:
    """The prediction for one task: pre-ticks the `preselect` best-scored candidates (`options` are
    the current ones in score order, as write_candidates returns them, whatever order the task
    shows them in; 0 pre-ticks none). Its score is the best candidate's probability, so Label
    Studio's uncertainty sampling offers the tasks the model is least sure of first."""
    if not options:
        return empty_prediction(version)
    ticked = [option["alias"] for option in options[:max(0, preselect)]]
    result = [fields.ticks(ticked)] if ticked else []
    return {"result": result, "score": round(math.exp(max(c.score for c in candidates)), 6),
            "model_version": version}


def empty_prediction(version: str) -> dict[str, Any]:
    return {"result": [], "score": 0.0, "model_version": version}


def project_id(value: Any) -> int | None:
    """The project id of a /predict payload: Label Studio sends "<id>.<created timestamp>"."""
    match = re.fullmatch(r"([0-9]{1,18})(\.[0-9]+)?", str(value).strip()) if value is not None else None
    return int(match.group(1)) if match else None


def task_id(task: dict[str, Any]) -> int | None:
    value = task.get("id")
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63:
        return value
    return int(value) if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 19 else None
