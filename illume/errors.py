"""One error type for everything a user can fix: what is wrong, and what to do."""
from __future__ import annotations


class IllumeError(Exception):
    """An error caused by input or setup, with the next step for the user."""

    def __init__(self, what: str, todo: str | None = None) -> None:
        self.what = what
        self.todo = todo
        super().__init__(f"{what}\n  -> {todo}" if todo else what)
