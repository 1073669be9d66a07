"""Generic JSONL / CSV items: image (path or URL), question, answer, optional explanation(s).

Explanations come as a list (`explanations`, JSONL) or as columns `explanation`,
`explanation_2`, `explanation_3`, ... (both formats). Relative image paths are resolved
against the file's folder. An item without an id gets a stable one from its content,
so importing the same file twice yields the same ids. Texts are checked as the export checks
them (illume.text.check_text); a row that is not usable is an error naming its line or row and field.
"""
from __future__ import annotations

import csv
import hashlib
from pathlib import Path
from typing import Any, Iterable

from illume.errors import IllumeError
from illume.records import MAX_LINE_BYTES, Item, iter_json_objects
from illume.text import MAX_TEXT_CHARS, check_text, max_text_chars

REQUIRED = ("image", "question", "answer")
FIX = "Each row needs image, question and answer; explanations are optional."
MAX_ITEM_ID_CHARS = 200  # an id names an item in tasks, exports and messages: not a text to tokenize


def stable_item_id(image: str, question: str) -> str:
    return "item-" + hashlib.sha1(f"{image}\n{question}".encode()).hexdigest()[:16]


def _is_remote(ref: str) -> bool:
    return ref.startswith(("http://", "https://", "data:", "/data/", "s3://", "gs://"))


def _json_kind(value: Any) -> str:
    kinds = ((str, "a text"), (bool, "true or false"), (int, "a number"), (float, "a number"), (list, "a list"),
             (dict, "an object"))
    return next((kind for cls, kind in kinds if isinstance(value, cls)), f"a {type(value).__name__}")


def _refuse(source: Path, where: str, name: str, problem: str, todo: str = FIX) -> IllumeError:
    return IllumeError(f"{source}, {where}: field {name!r} {problem}", todo)


def _required(row: dict[str, Any], name: str, source: Path, where: str) -> str:
    value = row.get(name)
    if name == "answer" and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # a count written as a JSON number: {"answer": 2}
    if value is None or (isinstance(value, str) and not value.strip()):
        raise _refuse(source, where, name, "is missing or empty")
    if not isinstance(value, str):
        raise _refuse(source, where, name, f"is {_json_kind(value)}, not a text", f"Write {name} as a string.")
    return value.strip()


def _explanations(row: dict[str, Any], source: Path, where: str, max_chars: int) -> list[str]:
    explanations = row.get("explanations")
    if explanations is None:
        keys = sorted((k for k in row if k == "explanation" or k.startswith("explanation_")),
                      key=lambda k: (k != "explanation", k))
        explanations = [row[k] for k in keys]
    elif isinstance(explanations, str):
        explanations = [explanations]
    elif not isinstance(explanations, list):
        raise _refuse(source, where, "explanations", "must be a list of strings")
    texts = []
    for number, text in enumerate(explanations, start=1):
        if text is None or (isinstance(text, str) and not text.strip()):
            continue  # empty explanation columns
        if not isinstance(text, str):
            raise _refuse(source, where, "explanations", f"holds {_json_kind(text)} (explanation {number}), "
                          "not a text", "Write each explanation as a string.")
        texts.append(check_text(text.strip(), f"{source}, {where}: explanation {number}", max_chars))
    return texts


def _item_id(row: dict[str, Any], source: Path, where: str, image: str, question: str) -> str:
    """The row's item_id (or id): a text, or an integer as its decimal text (0 too); else one derived."""
    for name in ("item_id", "id"):
        value = row.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if not isinstance(value, str):
            raise _refuse(source, where, name, f"is {_json_kind(value)}, not a text or an integer",
                          "Write the id as a string or an integer, or leave it out to derive one.")
        if len(value) > MAX_ITEM_ID_CHARS:
            raise _refuse(source, where, name, f"is {len(value)} characters long, over the limit of "
                          f"{MAX_ITEM_ID_CHARS}", "Give the item a shorter id, or leave it out to derive one.")
        return check_text(value, f"{source}, {where}: field {name!r}")
    return stable_item_id(image, question)


def _meta(row: dict[str, Any], source: Path, where: str) -> dict[str, Any]:
    meta = row.get("meta")
    if meta in (None, ""):
        return {}
    if not isinstance(meta, dict):
        raise _refuse(source, where, "meta", f"is {_json_kind(meta)}, not a JSON object",
                      "Write meta as a JSON object (JSONL), or leave it out: other columns go to meta as they are.")
    return dict(meta)  # Item records written by this project keep theirs


def row_to_item(row: dict[str, Any], source: Path, where: str, max_chars: int = MAX_TEXT_CHARS) -> Item:
    image, question, answer = (_required(row, name, source, where) for name in REQUIRED)
    question, answer = (check_text(value, f"{source}, {where}: field {name!r}", max_chars)
                        for name, value in (("question", question), ("answer", answer)))
    if not _is_remote(image) and not Path(image).is_absolute():
        image = str((source.parent / image).resolve())
    explanations = _explanations(row, source, where, max_chars)
    item_id = _item_id(row, source, where, image, row["question"])  # unstripped, as ids were always derived
    split = row.get("split") or None
    if split is not None and not isinstance(split, str):
        raise _refuse(source, where, "split", f"is {_json_kind(split)}, not a text", "Write split as a string.")
    known = set(REQUIRED) | {"item_id", "id", "explanations", "split", "meta"}
    meta = _meta(row, source, where)
    meta.update({k: v for k, v in row.items() if k not in known and not k.startswith("explanation")})
    return Item(item_id=item_id, image=image, question=question, answer=answer, explanations=explanations,
                split=split, meta=meta)


def read_jsonl_items(path: Path) -> list[Item]:
    max_chars = max_text_chars()
    return [row_to_item(row, path, f"line {number}", max_chars) for number, row in iter_json_objects(path, FIX)]


def read_csv_items(path: Path) -> list[Item]:
    max_chars = max_text_chars()
    csv.field_size_limit(max(csv.field_size_limit(), MAX_LINE_BYTES))  # a cell may hold a data: URI image
    # -sig: spreadsheets save "CSV UTF-8" with a byte-order mark, which would else join the first column's name
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        items: list[Item] = []
        number = 1  # rows count the header as row 1, as spreadsheets do
        try:
            missing = [name for name in REQUIRED if name not in (reader.fieldnames or [])]
            if missing:
                raise IllumeError(f"{path}: the header lacks the column(s) {', '.join(missing)}", FIX)
            for number, row in enumerate(reader, start=2):
                items.append(row_to_item(_cells(row, path, number), path, f"row {number}", max_chars))
        except UnicodeDecodeError as exc:
            raise IllumeError(f"{path}: not UTF-8 text near row {number + 1} ({exc.reason})",
                              "Save the file as CSV UTF-8 (a spreadsheet's 'CSV UTF-8' export).") from None
        except csv.Error as exc:  # a cell over the size limit, a NUL byte the reader refuses, ...
            raise IllumeError(f"{path}: row {number + 1} cannot be read as CSV ({exc})", FIX) from None
        return items


def _cells(row: dict[str | None, Any], path: Path, number: int) -> dict[str, Any]:
    if None in row:  # DictReader keeps cells beyond the header under None
        raise IllumeError(f"{path}, row {number}: {len(row[None])} cell(s) more than the header has columns",
                          "Quote cells that hold commas, or add the missing column names to the header.")
    return row


def check_unique(items: Iterable[Item], source: Path) -> None:
    seen: set[str] = set()
    for item in items:
        if item.item_id in seen:
            raise IllumeError(f"{source}: item id {item.item_id!r} appears twice",
                              "Give each row a unique `item_id` (or leave it out to derive one).")
        seen.add(item.item_id)
