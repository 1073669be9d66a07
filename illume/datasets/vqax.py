"""VQA-X in both of its layouts (SPEC section 2).

- ILLUME's split: column-oriented JSON `{field: {row_index: value}}` with image_id,
  question, question_id, multiple_choice_answer, explanation, explanation_2, explanation_3.
- The original release: `{question_id: {question, answers, explanation: [...], image_name}}`.

Images are COCO 2014 files (`COCO_val2014_%012d.jpg`) looked up under `image_root`.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from illume.errors import IllumeError
from illume.records import Item, read_json_object

COLUMN_FIELDS = ("image_id", "question", "question_id", "multiple_choice_answer", "explanation")
FIX = "Check the file is VQA-X as released or as split by ILLUME (see SPEC section 2)."


def coco_image_name(image_id: int, coco_split: str = "val2014") -> str:
    return f"COCO_{coco_split}_{int(image_id):012d}.jpg"


def is_column_layout(data: Any) -> bool:
    return isinstance(data, dict) and "question" in data and isinstance(data["question"], dict)


def read_vqax(path: str | Path, image_root: str | Path | None = None, coco_split: str = "val2014") -> list[Item]:
    path = Path(path)
    data = read_json_object(path, FIX)
    root = Path(image_root) if image_root else path.parent / "images"
    if is_column_layout(data):
        return _read_columns(path, data, root, coco_split)
    return _read_original(path, data, root)


def _read_columns(path: Path, data: dict, root: Path, coco_split: str) -> list[Item]:
    missing = [f for f in COLUMN_FIELDS if f not in data]
    if missing:
        raise IllumeError(f"{path}: column-oriented VQA-X lacks the field(s) {', '.join(missing)}", FIX)
    items = []
    for row in data["question"]:  # row indices as strings, in file order
        def value(name: str, required: bool = True) -> Any:
            column = data.get(name, {})
            if row not in column or column[row] in (None, ""):
                if required:
                    raise IllumeError(f"{path}, row {row}: field {name!r} is missing or empty", FIX)
                return None
            return column[row]

        explanations = [e for e in (value(n, n == "explanation") for n in
                                    ("explanation", "explanation_2", "explanation_3")) if e]
        image_id = value("image_id")
        items.append(Item(item_id=f"vqax-{value('question_id')}", image=str(root / coco_image_name(image_id, coco_split)),
                          question=str(value("question")), answer=str(value("multiple_choice_answer")),
                          explanations=[str(e) for e in explanations],
                          meta={k: data[k][row] for k in ("image_id", "question_type", "answer_type")
                                if k in data and row in data[k]}))
    return items


def _majority_answer(answers: Any) -> str | None:
    texts = [a.get("answer") if isinstance(a, dict) else a for a in answers or []]
    texts = [t for t in texts if t]
    return Counter(texts).most_common(1)[0][0] if texts else None


def _read_original(path: Path, data: dict, root: Path) -> list[Item]:
    items = []
    for question_id, entry in data.items():
        if not isinstance(entry, dict):
            raise IllumeError(f"{path}, question {question_id}: expected an object, found {type(entry).__name__}", FIX)
        answer = entry.get("multiple_choice_answer") or _majority_answer(entry.get("answers"))
        for name, present in (("question", entry.get("question")), ("answers", answer), ("image_name", entry.get("image_name"))):
            if not present:
                raise IllumeError(f"{path}, question {question_id}: field {name!r} is missing or empty", FIX)
        explanations = entry.get("explanation") or []
        if isinstance(explanations, str):
            explanations = [explanations]
        items.append(Item(item_id=f"vqax-{question_id}", image=str(root / entry["image_name"]),
                          question=str(entry["question"]), answer=str(answer),
                          explanations=[str(e) for e in explanations if e],
                          meta={k: entry[k] for k in ("question_type", "answer_type") if k in entry}))
    return items
