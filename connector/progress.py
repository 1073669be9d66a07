"""Progress of long commands (import, predict, annotate, export, offline sampling): the one home.

A tqdm bar on stderr with count, rate and time left (when the total is known). On a stream that
is not a terminal (logs, CI, pipes) the bar stays quiet and `end()` writes one summary line, so
logs are not flooded with carriage returns. Never on stdout: `--json` output stays one object.

Work that runs in other processes (offline sampling under the deepspeed launcher) reports with
`progress_line(n)` on its stdout; the parent passes each line to `forward`, which feeds the bar.
"""
from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Callable
from typing import TextIO

from tqdm import tqdm

PROGRESS_MARK = "illume-progress:"  # prefix of a child process's "n more units done" line
FALLBACK_WIDTH, FALLBACK_HEIGHT = 100, 24  # a terminal that reports no size


class Progress:
    """Callable with the units just done; `set_total` once the total is known; `end()` when done."""

    def __init__(self, label: str, total: int | None = None, unit: str = "task", stream: TextIO | None = None,
                 live: bool | None = None) -> None:
        self.label, self.unit, self.done = label.strip(), unit, 0
        self.stream = stream if stream is not None else sys.stderr
        self.live = self._is_terminal(self.stream) if live is None else live
        self.started = time.monotonic()
        width = self._width(self.stream)
        self.bar = tqdm(total=total, desc=label, unit=unit, file=self.stream, disable=not self.live,
                        dynamic_ncols=bool(width), ncols=None if width else FALLBACK_WIDTH,
                        nrows=None if width else FALLBACK_HEIGHT, smoothing=0.1)
        self.ended = False

    @staticmethod
    def _is_terminal(stream: TextIO) -> bool:
        isatty = getattr(stream, "isatty", None)
        return bool(isatty and isatty())

    @staticmethod
    def _width(stream: TextIO) -> int:
        """The terminal's width; 0 when it reports none (a bare pty, `docker exec -t`): tqdm would draw nothing."""
        try:
            return os.get_terminal_size(stream.fileno()).columns
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            return 0

    def set_total(self, total: int) -> None:
        self.bar.total = total
        self.bar.refresh()

    def __call__(self, amount: int = 1) -> None:
        self.done += amount
        self.bar.update(amount)

    def summary(self) -> str:
        seconds = time.monotonic() - self.started
        rate = f", {self.done / seconds:.2f} {self.unit}/s" if seconds > 0 and self.done else ""
        return f"{self.label}: {self.done} {self.unit}s in {seconds:.1f} s{rate}"

    def end(self) -> None:
        """Close the bar; off a terminal, say the one summary line (only when something was done)."""
        if self.ended:
            return
        self.ended = True
        self.bar.close()
        if not self.live and self.done:
            print(self.summary(), file=self.stream, flush=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.end()


def announce_total(progress: Callable[[int], None] | None, total: int) -> None:
    """Tell a progress callback the total once the work has listed it (plain callables ignore it)."""
    set_total = getattr(progress, "set_total", None)
    if set_total is not None:
        set_total(total)


def progress_line(amount: int) -> str:
    """What a child process prints (on its stdout, one line) after finishing `amount` units."""
    return f"{PROGRESS_MARK} {amount}"


def forward(line: str, progress: Callable[[int], None] | None) -> bool:
    """Feed a child's progress line to `progress`; False for any other line (echo those).

    The mark is searched anywhere, as multi-host launchers prefix each line with the host name."""
    head, mark, amount = line.partition(PROGRESS_MARK)
    if not mark or not amount.strip().isdigit():
        return False
    if progress is not None:
        progress(int(amount))
    return True
