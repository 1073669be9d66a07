"""The record schema shared by the backend, the connector and the training job.

Every record is a plain dataclass that round-trips through one JSON object per line.
Files are written atomically: a reader never sees a half-written file, even after a kill.
"""
from __future__ import annotations

import codecs
import dataclasses
import hashlib
import itertools
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Type, TypeVar

from illume.errors import IllumeError
from illume.text import read_text_file
from illume.prompts import rationale_of_reply, rationale_prompt, rationale_reply


@dataclass
class Item:
    """One image + question + answer, with optional reference explanations."""

    item_id: str
    image: str  # local path, http(s) URL, Label Studio URL or data: URI
    question: str
    answer: str
    explanations: list[str] = field(default_factory=list)
    split: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Candidate:
    """One sampled rationale with the model's confidence in it."""

    text: str
    score: float  # mean token log-probability under the sampling model
    temperature: float


@dataclass
class Feedback:
    """What annotators said about one item's candidates (one record per item)."""

    item_id: str
    image: str
    question: str
    answer: str
    candidates: list[str]
    accepted: list[str]  # candidates ticked by enough annotators
    rejected: list[str]  # candidates nobody (or too few) ticked
    written: list[str] = field(default_factory=list)  # rationales typed by annotators
    annotation_ids: list[int] = field(default_factory=list)
    annotators: int = 1
    iteration: int = 0
    lead_times: list[float | None] = field(default_factory=list)  # seconds per annotation (Label Studio's lead_time)


RATIONALE = "rationale"
ANSWER_ONLY = "answer"


@dataclass
class TrainingRow:
    """One supervised row: answer-only rows teach answering, rationale rows explaining."""

    kind: str  # RATIONALE or ANSWER_ONLY
    item_id: str
    image: str
    question: str
    answer: str
    rationale: str | None = None
    iteration: int = 0
    task_id: int | None = None  # the Label Studio task it came from (None: not from a judged task)

    def __post_init__(self) -> None:
        if self.kind not in (RATIONALE, ANSWER_ONLY):
            raise ValueError(f"TrainingRow.kind must be {RATIONALE!r} or {ANSWER_ONLY!r}, got {self.kind!r}")
        if self.kind == RATIONALE and not self.rationale:
            raise ValueError(f"rationale row for item {self.item_id!r} has no rationale text")


def user_turn(question: str) -> list[dict[str, Any]]:
    """TRL's conversational prompt of a vision row: the user's turn, the image then the question."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]


def assistant_turn(text: str) -> list[dict[str, Any]]:
    """TRL's conversational completion: one assistant turn holding `text`."""
    return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]


@dataclass
class PreferencePair:
    """An accepted and a rejected rationale for the same item (image, question, answer).

    On disk (preferences.jsonl) each pair is a line in TRL's vision DPO layout, readable by
    `datasets.load_dataset("json", ...)` and TRL's DPOTrainer as it is: `images`, a
    conversational `prompt` (the user's turn: the image and the question) and `chosen` /
    `rejected` assistant turns ("{answer}, seeing that {rationale}"), plus our own keys.
    """

    item_id: str
    images: list[str]
    question: str
    answer: str
    chosen: str  # the rationale texts alone
    rejected: str
    task_id: int | None = None  # the Label Studio task it came from

    @property
    def prompt(self) -> str:
        return rationale_prompt(self.question, self.answer)

    def to_json_object(self) -> dict[str, Any]:
        def reply(rationale: str) -> list[dict[str, Any]]:
            return assistant_turn(rationale_reply(self.answer, rationale))

        return {"item_id": self.item_id, "question": self.question, "answer": self.answer, "images": self.images,
                "prompt": user_turn(self.question), "chosen": reply(self.chosen), "rejected": reply(self.rejected),
                "task_id": self.task_id}

    @classmethod
    def from_json_object(cls, data: dict[str, Any]) -> "PreferencePair":
        def rationale(turns: Any) -> str:
            if not (isinstance(turns, list) and len(turns) == 1 and isinstance(turns[0], dict)
                    and turns[0].get("role") == "assistant"):
                raise ValueError("chosen/rejected must each be one assistant turn")
            content = turns[0].get("content")
            text = content if isinstance(content, str) else "".join(
                part.get("text", "") for part in content or [] if isinstance(part, dict) and part.get("type") == "text")
            return rationale_of_reply(str(data["answer"]), text)

        task_id = data.get("task_id")
        if task_id is not None and not (isinstance(task_id, int) and not isinstance(task_id, bool)):
            raise ValueError(f"task_id must be a task's number, got {task_id!r}")
        return cls(str(data["item_id"]), list(data["images"]), str(data["question"]), str(data["answer"]),
                   rationale(data["chosen"]), rationale(data["rejected"]), task_id)


R = TypeVar("R")


def json_object(record: Any) -> dict[str, Any]:
    """A record's JSON form: its own `to_json_object()` where it has one, else its fields."""
    return record.to_json_object() if hasattr(record, "to_json_object") else dataclasses.asdict(record)


def to_json(record: Any) -> str:
    return json.dumps(json_object(record), ensure_ascii=False, sort_keys=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a file so that it is either the old content or the new, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl(path: str | os.PathLike, records: Iterable[Any]) -> int:
    """Atomically write records (dataclasses or dicts) one JSON object per line."""
    lines = [to_json(r) if dataclasses.is_dataclass(r) else json.dumps(r, ensure_ascii=False, sort_keys=True) for r in records]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


RECREATE = "Re-create the file, e.g. with `illume-sync export`."


MAX_LINE_BYTES = 64 << 20  # one record; a row may carry a data: URI image (20 MB of image: 27 MB of base64)


def iter_json_objects(path: str | os.PathLike, todo: str = RECREATE) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) per non-blank line; a line that is not a JSON object (or is not UTF-8,
    nested beyond the parser, or longer than MAX_LINE_BYTES) is an error naming the file and the
    line, with `todo` as the next step."""
    with open(path, "rb") as handle:  # decoded line by line, so that an error names its line
        for number in itertools.count(1):
            raw = handle.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            if len(raw) > MAX_LINE_BYTES:
                raise IllumeError(f"{path}, line {number}: longer than {MAX_LINE_BYTES} bytes", todo)
            if number == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)  # a byte-order mark (Windows editors) is no text
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise IllumeError(f"{path}, line {number}: not UTF-8 text ({exc.reason} at byte {exc.start})",
                                  f"Save the file as UTF-8. {todo}") from None
            if line.strip():
                yield number, _json_object(line, f"{path}, line {number}", todo)


def _json_object(text: str, where: str, todo: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise IllumeError(f"{where}: not valid JSON ({exc.msg})", todo) from None
    except RecursionError:
        raise IllumeError(f"{where}: JSON nested too deeply to read", todo) from None
    if not isinstance(data, dict):
        raise IllumeError(f"{where}: expected a JSON object, found {type(data).__name__}", todo)
    return data


MAX_JSON_FILE_BYTES = 1 << 30  # VQA-X's training split, the largest file read whole, is about 30 MB


def read_json_object(path: str | os.PathLike, todo: str) -> dict[str, Any]:
    """The JSON object a whole file holds; IllumeError (naming the file, with `todo`) when it is not
    UTF-8, over MAX_JSON_FILE_BYTES, not JSON, nested beyond the parser or not an object."""
    return _json_object(read_text_file(path, "the file", todo, MAX_JSON_FILE_BYTES), str(path), todo)


def iter_jsonl(path: str | os.PathLike, cls: Type[R]) -> Iterator[R]:
    """Read records of one dataclass type; a bad line names the file and the line."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    parse = getattr(cls, "from_json_object", None)
    for number, data in iter_json_objects(path):
        try:
            yield parse(data) if parse else cls(**{k: v for k, v in data.items() if k in names})
        except (TypeError, ValueError, KeyError) as exc:
            raise IllumeError(f"{path}, line {number}: not a valid {cls.__name__} ({exc})", RECREATE) from exc


def read_jsonl(path: str | os.PathLike, cls: Type[R]) -> list[R]:
    return list(iter_jsonl(path, cls))


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def rationale_weight(rows: Iterable[TrainingRow]) -> float:
    """SPEC section 1: w = #answer-only rows / #rationale rows (1.0 when either is empty)."""
    rationale = answer = 0
    for row in rows:
        if row.kind == RATIONALE:
            rationale += 1
        else:
            answer += 1
    return answer / rationale if rationale and answer else 1.0
