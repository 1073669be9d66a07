"""Export a live Label Studio project: stream its JSON export through the conversion."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from connector.client import LabelStudioClient
from connector.export import ExportOptions, convert, iter_tasks
from connector.export_images import ImageCollector
from connector.project import require_candidates
from illume.records import EXPORT_MANIFEST


def next_iteration(previous: Path | None) -> int:
    manifest = Path(previous) / EXPORT_MANIFEST if previous else None
    if manifest is None or not manifest.is_file():
        return 0
    return int(json.loads(manifest.read_text(encoding="utf-8")).get("iteration", -1)) + 1


def export_project(client: LabelStudioClient, project: dict, out: Path, min_agreement: int | None = None,
                   previous: Path | None = None, iteration: int | None = None,
                   progress: Callable[[int], None] | None = None, round_: int | None = None) -> dict[str, Any]:
    require_candidates(project)
    options = ExportOptions(min_agreement=min_agreement, previous=previous,
                            iteration=next_iteration(previous) if iteration is None else iteration, round=round_,
                            project={"id": project["id"], "title": project.get("title")}, source=client.url)
    response = client.stream(f"/api/projects/{project['id']}/export", params={"exportType": "JSON"})
    try:
        return convert(iter_tasks(response.raw), out, options,
                       images=lambda work: ImageCollector(work, client=client), progress=progress)
    finally:
        response.close()
