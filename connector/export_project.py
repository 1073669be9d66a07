"""Export a live Label Studio project: its tasks streamed through the conversion.

Two ways to read the tasks:
  * `snapshot` (the default): Label Studio's export snapshots (create, wait until completed,
    download streamed to a file beside the output, delete). Resumable: the snapshot's id is
    recorded beside the output, so a re-run after an interruption reuses the snapshot (and a
    finished download) instead of starting again. Only tasks with annotations are included;
  * `sync`: GET /api/projects/<id>/export, streamed: Label Studio builds the whole answer inside
    one request, which its documentation says times out on large projects.
benchmarks/export.py measured the snapshot faster at every size tried (10,000 tasks: 233 vs
192 tasks/s; 300 tasks: 178 vs 146), so there is no separate fast path for small projects.
"""
from __future__ import annotations

import glob
import json
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from illume.labelstudio.client import LabelStudioClient
from connector.export import ExportOptions, convert, iter_tasks
from connector.export_images import ImageCollector
from connector.annotator_quality import AnnotatorQuality, QualitySettings, user_names
from connector.export_writer import AnswerPool
from connector.project import require_schema, required_annotations
from illume.errors import IllumeError
from illume.images import ImagePolicy
from illume.layout import EXPORT_MANIFEST
from illume.records import atomic_write_text

METHODS = ("snapshot", "sync")
SNAPSHOT_WAIT_S = 3600.0

log = logging.getLogger(__name__)


@dataclass
class ProjectExportOptions(ExportOptions):
    """ExportOptions plus where answer-only rows come from and whose annotations are left out
    (connector.export_writer)."""

    answer_pool: AnswerPool | None = field(default=None, metadata={"help": (
        "draw answer-only rows from all the project's items (None: only annotated items without an "
        "accepted rationale, as before issue 22)")})
    held_out: frozenset[str] = field(default=frozenset(), metadata={"help": (
        "item ids that never get an answer-only row: the held-out (evaluation) items")})
    excluded_annotators: frozenset = field(default=frozenset(), metadata={"help": (
        "Label Studio user ids whose annotations are left out of the judgment (a task's completeness "
        "still counts them)")})
    annotator_quality: Callable[[], dict[str, Any]] | None = field(default=None, metadata={"help": (
        "the manifest's annotator_quality figures, asked for once every task was read (None: no such section "
        "unless annotators are excluded)")})


def held_out_ids(eval_items: Path | None) -> frozenset[str]:
    """The item ids of a held-out items file (JSONL of Item), for ProjectExportOptions.held_out."""
    from illume.records import Item, read_jsonl

    return frozenset(item.item_id for item in read_jsonl(eval_items, Item)) if eval_items else frozenset()


def next_iteration(previous: Path | None) -> int:
    manifest = Path(previous) / EXPORT_MANIFEST if previous else None
    if manifest is None or not manifest.is_file():
        return 0
    data = _read_json(manifest)
    iteration = data.get("iteration", -1) if data is not None else None
    if type(iteration) is not int:  # unreadable, or not an integer (bool included)
        raise IllumeError(f"{manifest} is unreadable or its \"iteration\" is not an integer",
                          "Pass --previous an intact earlier export, or export that one again if it was cut short.")
    return iteration + 1


def _read_json(path: Path) -> dict | None:
    """The JSON object in `path`; None when the file cannot be read, parsed, or holds no object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None
    return data if isinstance(data, dict) else None


def export_policy(client: LabelStudioClient, allow_hosts: tuple[str, ...] = (),
                  allow_roots: tuple[Path, ...] = ()) -> ImagePolicy:
    """Images from this Label Studio (with its API key) and data: URIs; other hosts and local
    folders only when the operator names them."""
    return ImagePolicy(allowed_hosts=list(allow_hosts), allowed_roots=list(allow_roots), label_studio=client)


def export_project(client: LabelStudioClient, project: dict, out: Path, min_agreement: int | None = None,
                   previous: Path | None = None, progress: Callable[[int], None] | None = None,
                   round_: int | None = None, *, policy: ImagePolicy | None = None, method: str = "snapshot",
                   exclude_tasks: frozenset[int] = frozenset(), min_annotations: int | None = None,
                   answer_pool: AnswerPool | None = None, held_out: frozenset[str] = frozenset(),
                   quality: QualitySettings | None = None, iteration: int | None = None) -> dict[str, Any]:
    """Export the project's completed tasks into `out` (atomically); the manifest.

    `round_`: only that labeling round's tasks. `iteration`: the rows' iteration number (without
    it: `round_`, else the previous export's iteration + 1, or 0). `exclude_tasks`: task ids left out (a round
    started from Label Studio exports what was not trained on yet). `min_annotations`: a task
    is complete with this many annotations (None: the project's overlap); those with fewer stay
    for a later export and are counted in the manifest. `answer_pool`: answer-only rows drawn from
    every task's item (the snapshot then includes tasks nobody annotated; excluded tasks' items
    too); `held_out`: item ids never given one. `quality`: how annotators are scored (the manifest's
    "annotator_quality"); with its min_quality, the annotations of people below it are left out
    (read in a first pass over the tasks), and a task those people had completed is judged by the
    votes of the rest.
    """
    schema = require_schema(project)
    if method not in METHODS:
        raise IllumeError(f"export method {method!r} is not one of {', '.join(METHODS)}", "Pass --method snapshot.")
    if iteration is None:
        iteration = round_ if round_ is not None else next_iteration(previous)
    required = required_annotations(project, min_annotations)
    quality = quality or QualitySettings()
    scores = AnnotatorQuality(schema, quality)
    policy = policy or export_policy(client)
    snapshot = method == "snapshot"

    def source():
        return (snapshot_tasks(client, project["id"], Path(out), annotated_only=answer_pool is None) if snapshot
                else sync_tasks(client, project["id"]))

    try:
        excluded = frozenset()
        if quality.min_quality is not None:  # who is below it, from every annotated task, before anything is written
            with source() as tasks:
                for task in tasks:
                    scores.add(task)
            excluded = frozenset(scores.below(quality.min_quality))
        options = ProjectExportOptions(
            min_agreement=min_agreement, previous=previous, iteration=iteration, min_annotations=required,
            round=round_, project={"id": project["id"], "title": project.get("title")}, source=client.url,
            schema=schema, answer_pool=answer_pool, held_out=held_out, excluded_annotators=excluded,
            annotator_quality=lambda: {**scores.summary(user_names(client)), "threshold": quality.min_quality})
        with source() as tasks:
            stream = tasks if quality.min_quality is not None else scores.observe(tasks)
            manifest = convert(_excluding(stream, exclude_tasks, keep_items=answer_pool is not None),
                               out, options, images=lambda work: ImageCollector(work, policy), progress=progress)
    except IllumeError:  # read to the end and refused (e.g. nothing completed): the next run takes a new snapshot
        if snapshot:
            forget_snapshot(client, project["id"], Path(out))
        raise
    if snapshot:  # kept after an interruption (a kill, a lost connection), so the next run resumes it
        forget_snapshot(client, project["id"], Path(out))
    return manifest


def _excluding(tasks: Iterator[dict], exclude: frozenset[int], keep_items: bool) -> Iterator[dict]:
    """The tasks but the excluded ones; with keep_items, those pass without annotations (not judged
    again, but their items can still give answer-only rows)."""
    for task in tasks:
        if task.get("id") not in exclude:
            yield task
        elif keep_items:
            yield {**task, "annotations": []}


@contextmanager
def sync_tasks(client: LabelStudioClient, project_id: int) -> Iterator[Iterator[dict]]:
    with client.stream(f"/api/projects/{project_id}/export", params={"exportType": "JSON"}) as body:
        yield iter_tasks(body)


def _state_path(out: Path) -> Path:
    return out.resolve().parent / f".{out.name}.snapshot.json"


@contextmanager
def snapshot_tasks(client: LabelStudioClient, project_id: int, out: Path, wait_s: float = SNAPSHOT_WAIT_S,
                   annotated_only: bool = True) -> Iterator[Iterator[dict]]:
    """The tasks of a (resumed or new) snapshot export, read from its downloaded file (only the
    annotated ones unless annotated_only is False)."""
    state_path = _state_path(out)
    state = _read_state(state_path)
    if state is None:  # truncated or hand-edited: only a resume is lost
        log.warning("ignoring the unreadable snapshot record %s: starting a new snapshot", state_path)
        state = {}
    if (state.get("project") != project_id or state.get("annotated_only", True) != annotated_only
            or not _snapshot_usable(client, project_id, state.get("export"))):
        # Label Studio without a job queue builds the snapshot inside this request: allow it the whole wait
        created = client.sdk.projects.exports.create(id=project_id, title=f"illume export to {out.name}",
                                                     task_filter_options={"only_with_annotations": annotated_only},
                                                     request_options={"timeout_in_seconds": wait_s})
        state = {"project": project_id, "export": created.id, "annotated_only": annotated_only}
        atomic_write_text(state_path, json.dumps(state))
    _wait_for(client, project_id, state["export"], wait_s)
    download = state_path.with_name(f".{out.name}.snapshot-{state['export']}.json")
    if not download.is_file():
        partial = download.with_suffix(".part")
        with client.stream(f"/api/projects/{project_id}/exports/{state['export']}/download",
                           params={"exportType": "JSON"}) as body, open(partial, "wb") as handle:
            while chunk := body.read(1 << 20):
                handle.write(chunk)
        os.replace(partial, download)  # only a whole download is ever reused
    with open(download, "rb") as handle:
        yield iter_tasks(handle)


def _read_state(state_path: Path) -> dict | None:
    """The recorded snapshot: {} when there is no record, None when it cannot be read."""
    return _read_json(state_path) if state_path.is_file() else {}


def _snapshot_usable(client: LabelStudioClient, project_id: int, export_id: int | None) -> bool:
    if export_id is None:
        return False
    from label_studio_sdk.core.api_error import ApiError

    try:
        status = client.sdk.projects.exports.get(id=project_id, export_pk=export_id).status
    except ApiError:
        return False
    return status in ("created", "in_progress", "queued", "completed")


def _wait_for(client: LabelStudioClient, project_id: int, export_id: int, wait_s: float) -> None:
    deadline, pause = time.monotonic() + wait_s, 0.2
    while True:
        status = client.sdk.projects.exports.get(id=project_id, export_pk=export_id).status
        if status == "completed":
            return
        if status == "failed":
            raise IllumeError(f"Label Studio could not build export snapshot {export_id} of project {project_id}",
                              "Check Label Studio's log; run the export again to start a new snapshot.")
        if time.monotonic() > deadline:
            raise IllumeError(f"Export snapshot {export_id} was not ready within {wait_s:.0f} s (status {status!r})",
                              "Run the export again later: it resumes with the same snapshot.")
        time.sleep(pause)  # polling Label Studio's background export until a deadline
        pause = min(pause * 2, 5.0)


def forget_snapshot(client: LabelStudioClient, project_id: int, out: Path) -> None:
    """Once the export is written: delete the snapshot in Label Studio, its download and the record."""
    state_path = _state_path(out)
    export_id = (_read_state(state_path) or {}).get("export")
    if export_id is not None:  # unknown after an unreadable record: that snapshot stays in Label Studio
        client.request("DELETE", f"/api/projects/{project_id}/exports/{export_id}", expect=(200, 204, 404))
    for path in [*state_path.parent.glob(f".{glob.escape(out.name)}.snapshot-*"), state_path]:
        path.unlink(missing_ok=True)
