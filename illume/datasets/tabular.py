"""Generic JSONL / CSV items: image (path or URL), question, answer, optional explanation(s).

Explanations come as a list (`explanations`, JSONL) or as columns `explanation`,
`explanation_2`, `explanation_3`, ... (both formats). Relative image paths are resolved
against the file's folder. An item without an id gets a stable one from its content,
so importing the same file twice yields the same ids.
"""
from __future__ import annotations

import csv
import hashlib
from pathlib import Path
from typing import Any, Iterable

from illume.errors import IllumeError
from illume.records import Item, iter_json_objects

REQUIRED = ("image", "question", "answer")
FIX = "Each row needs image, question and answer; explanations are optional."


def stable_item_id(image: str, question: str) -> str:
    return "item-" + hashlib.sha1(f"{image}\n{question}".encode()).hexdigest()[:16]


def _is_remote(ref: str) -> bool:
    return ref.startswith(("http://", "https://", "data:", "/data/", "s3://", "gs://"))


def row_to_item(row: dict[str, Any], source: Path, where: str) -> Item:
    for name in REQUIRED:
        value = row.get(name)
        if value is None or str(value).strip() == "":
            raise IllumeError(f"{source}, {where}: field {name!r} is missing or empty", FIX)
    image = str(row["image"]).strip()
    if not _is_remote(image) and not Path(image).is_absolute():
        image = str((source.parent / image).resolve())
    explanations = row.get("explanations")
    if explanations is None:
        keys = sorted((k for k in row if k == "explanation" or k.startswith("explanation_")),
                      key=lambda k: (k != "explanation", k))
        explanations = [row[k] for k in keys]
    elif isinstance(explanations, str):
        explanations = [explanations]
    elif not isinstance(explanations, list):
        raise IllumeError(f"{source}, {where}: field 'explanations' must be a list of strings", FIX)
    item_id = str(row.get("item_id") or row.get("id") or stable_item_id(image, str(row["question"])))
    known = set(REQUIRED) | {"item_id", "id", "explanations", "split", "meta"}
    meta = dict(row.get("meta") or {})  # Item records written by this project keep theirs
    meta.update({k: v for k, v in row.items() if k not in known and not k.startswith("explanation")})
    return Item(item_id=item_id, image=image, question=str(row["question"]).strip(), answer=str(row["answer"]).strip(),
                explanations=[str(e).strip() for e in explanations if e and str(e).strip()],
                split=row.get("split") or None, meta=meta)


def read_jsonl_items(path: Path) -> list[Item]:
    return [row_to_item(row, path, f"line {number}") for number, row in iter_json_objects(path, FIX)]


def read_csv_items(path: Path) -> list[Item]:
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [name for name in REQUIRED if name not in (reader.fieldnames or [])]
        if missing:
            raise IllumeError(f"{path}: the header lacks the column(s) {', '.join(missing)}", FIX)
        # Row numbers count the header as row 1, as spreadsheets do.
        return [row_to_item(row, path, f"row {number}") for number, row in enumerate(reader, start=2)]


def check_unique(items: Iterable[Item], source: Path) -> None:
    seen: set[str] = set()
    for item in items:
        if item.item_id in seen:
            raise IllumeError(f"{source}: item id {item.item_id!r} appears twice",
                              "Give each row a unique `item_id` (or leave it out to derive one).")
        seen.add(item.item_id)
