"""Text keys and text checks shared by sampling, export, the backend and the metrics (no torch needed)."""
from __future__ import annotations

import os
import re

from illume.errors import IllumeError

MAX_TEXT_CHARS = 2000  # a question, answer or rationale; the tokenizer never truncates (training/data.py)
# lone surrogates (undecodable), C0 and C1 control characters other than tab and newlines, and the
# 66 non-characters. Bidi controls (U+202A-U+202E, U+2066-U+2069) pass: right-to-left text uses them.
_UNDECODABLE_TEXT = re.compile("[\ud800-\udfff]")  # cannot be written as UTF-8
_NONCHARACTERS = "\ufdd0-\ufdef" + "".join(chr(plane << 16 | 0xFFFE) + chr(plane << 16 | 0xFFFF) for plane in range(17))
_UNUSABLE_TEXT = re.compile(f"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff{_NONCHARACTERS}]")


def read_text_file(path: str | os.PathLike, what: str, todo: str, max_bytes: int) -> str:
    """A file a user names, as text: at most `max_bytes`, UTF-8 (a leading byte-order mark is dropped).
    IllumeError naming `what` and the file, with `todo`, when it is unreadable, too long or not UTF-8."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(max_bytes + 1)
    except OSError as exc:
        raise IllumeError(f"{what} {path} cannot be read ({exc.strerror or exc})", todo) from None
    if len(raw) > max_bytes:
        raise IllumeError(f"{what} {path} is larger than {max_bytes:,} bytes", todo)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IllumeError(f"{what} {path} is not UTF-8 text ({exc.reason} at byte {exc.start})",
                          f"Save it as UTF-8. {todo}") from None


def normalise(text: str) -> str:
    """The key under which two candidates (or two answers) count as the same text."""
    return re.sub(r"[^\w ]", "", " ".join(text.lower().split())).strip()


def max_text_chars() -> int:
    """The text limit: ILLUME_MAX_TEXT_CHARS when set (the backend's --max-text-chars reads it too)."""
    value = os.environ.get("ILLUME_MAX_TEXT_CHARS", "").strip()
    if not value:
        return MAX_TEXT_CHARS
    if not value.isdigit() or int(value) < 1:
        raise IllumeError(f"ILLUME_MAX_TEXT_CHARS is {value[:40]!r}, not a positive number of characters",
                          f"Set it to a whole number such as {MAX_TEXT_CHARS}, or unset it.")
    return int(value)


def check_text(value: str, where: str, max_chars: int = MAX_TEXT_CHARS, control_characters: bool = False) -> str:
    """`value` if the tokenizer can take it: bounded in length, valid Unicode and, unless
    `control_characters`, without control characters. `where` names it in the error
    ("task 3: field 'question'"). Model output may hold control characters (the export allows them)."""
    if len(value) > max_chars:
        raise IllumeError(f"{where} is {len(value)} characters long, over the limit of {max_chars}",
                          "Shorten the text, or raise the limit (--max-text-chars / ILLUME_MAX_TEXT_CHARS).")
    unusable = _UNDECODABLE_TEXT if control_characters else _UNUSABLE_TEXT
    if bad := unusable.search(value):
        code = ord(bad.group())
        if 0xD800 <= code <= 0xDFFF:
            raise IllumeError(f"{where} is not valid Unicode (a lone surrogate U+{code:04X} at character "
                              f"{bad.start()})", "Fix the text's encoding in the task data.")
        kind = "control character" if code <= 0x9F else "non-character"
        raise IllumeError(f"{where} holds the {kind} U+{code:04X} at character {bad.start()}",
                          f"Remove {kind}s from the task data.")
    return value
