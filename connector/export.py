"""Label Studio JSON export -> training rows, preference pairs, feedback and a manifest.

The conversion streams: tasks are read one at a time (ijson) and rows are written as they
come, so memory grows with the number of distinct accepted rationales and answer-only items,
never with the size of the export. The export directory is written under a temporary name
and swapped in at the end (illume.atomic_dir), so a kill at any point leaves the previous
export as it was. Re-running on the same Label Studio state gives the same bytes except the
manifest's time.

What a task's annotations mean: connector.judging; agreement: connector.agreement; the
files written: connector.export_writer.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator

import ijson

from connector.export_images import ImageCollector
from connector.export_writer import write_export
from illume.atomic_dir import remove_stale_temporaries, swap_in, temporary_beside
from illume.errors import IllumeError
from illume.labeling_schema import LabelingSchema, shipped_schema
from illume.layout import EXPORT_MANIFEST
from illume.text import max_text_chars


@dataclass
class ExportOptions:
    min_agreement: int | None = None  # None: strict majority of the task's annotators
    min_annotations: int = 1  # a task with fewer (one per person) is not complete yet: left for a later export
    iteration: int = 0
    round: int | None = None  # export only the tasks of this labeling round (None: all tasks)
    previous: Path | None = None  # an earlier export directory to merge
    project: dict[str, Any] = field(default_factory=dict)  # {"id", "title"} for the manifest
    source: str = ""  # the Label Studio URL, for the manifest
    schema: LabelingSchema | None = None  # the project's labeling schema (None: the shipped config's)
    max_text_chars: int = field(default_factory=max_text_chars)  # per question, answer, candidate, rationale


def iter_tasks(stream: IO[bytes]) -> Iterator[dict]:
    """Tasks of a Label Studio JSON export (a JSON array), one at a time."""
    try:
        yield from ijson.items(stream, "item", use_float=True)
    except ijson.JSONError as exc:
        raise IllumeError(f"The Label Studio export is not valid JSON ({exc})",
                          "Export again; if it repeats, check the server's log.") from exc


def convert(tasks: Iterable[dict], out_dir: str | os.PathLike, options: ExportOptions | None = None,
            images: Callable[[Path], ImageCollector] | None = None,
            progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Write rows/pairs/feedback/manifest for these tasks into out_dir, atomically. Returns the manifest."""
    options = options or ExportOptions()
    if options.min_agreement is not None and options.min_agreement < 1:
        raise IllumeError(f"--min-agreement must be at least 1, got {options.min_agreement}",
                          "Pass the number of annotators that must tick a candidate, e.g. 2.")
    out_dir = Path(out_dir).resolve()
    previous = Path(options.previous).resolve() if options.previous else None
    if previous is not None and not previous.is_dir():
        raise IllumeError(f"Previous export {previous} does not exist", "Pass an existing export directory.")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir())
                                                       and not (out_dir / EXPORT_MANIFEST).is_file())):
        raise IllumeError(f"{out_dir} exists and is not an export directory (no {EXPORT_MANIFEST})",
                          "Choose an empty or new --out directory, or an earlier export to replace.")
    work = temporary_beside(out_dir)
    try:
        collector = images(work) if images else ImageCollector(work)
        if previous is not None:
            collector.reuse(previous)
        manifest = write_export(tasks, work, collector, options, options.schema or shipped_schema(), previous,
                                progress)
        swap_in(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return manifest
