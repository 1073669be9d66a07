"""Items -> Label Studio tasks, without duplicates: each task carries its stable `item_id`.

What a task holds is the task contract (illume.labelstudio.task.task_data). Reference
explanations go into the task's `meta`, not its data: Label Studio's data manager shows every
data key as a column (and the labeling view can show any of them), while `meta` is neither
shown nor sent to the labeling interface's fields; the simulated critic and the JSON export
still read it (`task_references`).

Images: http(s) URLs and Label Studio URLs are stored as they are; so are cloud-storage URIs
(s3://, gs://, azure-blob://) once the project has a storage connected for their bucket, which
Label Studio resolves for the labeling view and the backend (/tasks/<id>/resolve). Local files are served
by Label Studio's local-files storage: they must lie under the server's
LOCAL_FILES_DOCUMENT_ROOT (`--local-files-root`, as this machine sees it); the project gets
a local storage connection for each folder that holds images.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence
from urllib.parse import quote

from illume.labelstudio.client import LabelStudioClient, json_body, send_checked
from illume.labelstudio.task import item_key, task_data
from illume.errors import IllumeError
from illume.labeling_schema import LabelingSchema
from illume.records import Item

BATCH = 500


def existing_item_ids(client: LabelStudioClient, project_id: int) -> set[tuple[str, int]]:
    """(item_id, round) of every task already in the project."""
    return _project_index(client, project_id)[0]


def _project_index(client: LabelStudioClient, project_id: int) -> tuple[set[tuple[str, int]], float | None]:
    """(item_id, round) of every task already in the project, and the gold share its gold tasks
    record (connector.gold; None when it has none)."""
    from connector.gold import recorded_share

    ids: set[tuple[str, int]] = set()
    share = None
    for task in client.pages("/api/tasks", {"project": project_id, "fields": "all"}, page_size=500):
        if (key := item_key(task.get("data") or {})) is not None:
            ids.add(key)
        if (found := recorded_share(task)) is not None:
            share = found
    return ids, share


def post_tasks(client: LabelStudioClient, project_id: int, tasks: list[dict]) -> bool:
    """Import these tasks once: after an unclear outcome (connection lost, HTTP 5xx after Label
    Studio may have stored the batch), the project's items are listed again and only the tasks
    still missing are sent again. True when some were sent again (remove_unjudged_copies)."""
    def send(pending: list[dict]) -> None:
        client.request("POST", f"/api/projects/{project_id}/import", json=pending, params={"return_task_ids": "true"},
                       timeout=max(client.timeout, 300.0), retry=False)

    def missing(pending: list[dict]) -> list[dict]:
        have = existing_item_ids(client, project_id)
        return [task for task in pending if item_key(task["data"]) not in have]

    return send_checked(send, tasks, missing, f"importing {len(tasks)} tasks into project {project_id}",
                 "Run the same command again: items Label Studio already holds are skipped, so nothing is "
                 "imported twice.")


def remove_unjudged_copies(client: LabelStudioClient, project_id: int) -> int:
    """Tasks of one item in one round beyond the first, which nobody has annotated, skipped or
    drafted, are deleted; how many. A batch sent again after an unclear outcome is stored twice
    when Label Studio was still storing the first one (a gateway that timed out before it did)."""
    copies: dict[tuple[str, int], list[tuple[int, bool]]] = {}
    for task in client.pages("/api/tasks", {"project": project_id, "fields": "all"}, page_size=500):
        if (key := item_key(task.get("data") or {})) is not None:
            judged = bool(task.get("total_annotations") or task.get("cancelled_annotations") or task.get("drafts"))
            copies.setdefault(key, []).append((int(task["id"]), judged))
    removed = 0
    for tasks in copies.values():
        if len(tasks) < 2:
            continue
        keep = {task_id for task_id, judged in tasks if judged} or {min(task_id for task_id, _ in tasks)}
        for task_id, _ in tasks:
            if task_id not in keep:
                client.request("DELETE", f"/api/tasks/{task_id}/", expect=(200, 204, 404))
                removed += 1
    return removed


# Cloud URI scheme -> Label Studio's storage API (/api/storages/<kind>) and the field naming the bucket.
STORAGE_KINDS = {"s3": ("s3", "bucket"), "gs": ("gcs", "bucket"), "azure-blob": ("azure", "container"),
                 "azure-spi": ("azure_spi", "container")}  # the schemes of illume.images.CLOUD_SCHEMES


@dataclass
class ImagePlacer:
    """Turns an item's image into a URL Label Studio can show."""

    client: LabelStudioClient
    project_id: int
    local_root: Path | None = None
    base_dir: Path | None = None  # resolves relative image paths

    def __post_init__(self) -> None:
        self._storages: set[Path] = set()
        self._buckets: set[tuple[str, str]] = set()  # (scheme, bucket) with a storage connected

    def url(self, image: str) -> str:
        if image.startswith(("http://", "https://", "/data/", "data:")):
            return image
        scheme, _, rest = image.partition("://")
        if scheme.lower() in STORAGE_KINDS and rest:
            self._require_cloud_storage(scheme.lower(), rest.split("/", 1)[0], image)
            return image
        path = Path(image)
        if not path.is_absolute() and self.base_dir is not None:
            path = self.base_dir / path
        path = path.resolve()
        if not path.is_file():
            raise IllumeError(f"Image {image} does not exist", "Fix the item's image path (relative paths are "
                                                                "resolved against the input file's folder).")
        if self.local_root is None:
            raise IllumeError(f"Image {path} is a local file, and Label Studio can only show local files served "
                              "from its local-files root",
                              "Put the images under the server's LOCAL_FILES_DOCUMENT_ROOT and pass "
                              "--local-files-root, or use http(s) URLs.")
        root = self.local_root.resolve()
        if not path.is_relative_to(root):
            raise IllumeError(f"Image {path} is outside the local-files root {root}",
                              "Move the images under --local-files-root (Label Studio's LOCAL_FILES_DOCUMENT_ROOT).")
        self._ensure_storage(path.parent, root)
        return f"/data/local-files/?d={quote(str(path.relative_to(root)))}"

    def _require_cloud_storage(self, scheme: str, bucket: str, image: str) -> None:
        """Label Studio resolves a cloud URI only through a storage of the project for its bucket."""
        if (scheme, bucket) in self._buckets:
            return
        kind, field_name = STORAGE_KINDS[scheme]
        response = self.client.request("GET", f"/api/storages/{kind}", params={"project": self.project_id},
                                       expect=(200, 404))
        storages = json_body(response, f"GET /api/storages/{kind}") if response.status_code == 200 else []
        storages = storages if isinstance(storages, list) else []
        if not any(s.get(field_name) == bucket for s in storages if isinstance(s, dict)):
            raise IllumeError(f"Image {image}: project {self.project_id} has no {kind} storage connected for "
                              f"{field_name} {bucket!r}, so Label Studio could not resolve it",
                              "Connect the bucket in the project's Settings > Cloud Storage (source storage; no "
                              "sync needed), then import again.")
        self._buckets.add((scheme, bucket))

    def _ensure_storage(self, folder: Path, root: Path) -> None:
        if any(folder.is_relative_to(known) for known in self._storages):
            return
        storages = self.client.get("/api/storages/localfiles", params={"project": self.project_id})
        for storage in storages if isinstance(storages, list) else []:
            if isinstance(storage, dict) and isinstance(storage.get("path"), str) and \
                    folder.is_relative_to(Path(storage["path"])):
                self._storages.add(Path(storage["path"]))
                return
        response = self.client.request("POST", "/api/storages/localfiles", expect=(200, 201, 400), json={
            "project": self.project_id, "path": str(folder), "title": f"illume images {folder.name}",
            "use_blob_urls": False, "regex_filter": None})
        if response.status_code == 400:
            raise IllumeError(f"Label Studio refused local storage {folder}: {response.text[:300]}",
                              "The folder must exist on the Label Studio server under LOCAL_FILES_DOCUMENT_ROOT "
                              "(and LOCAL_FILES_SERVING_ENABLED=true).")
        self._storages.add(folder)


@dataclass
class ImportResult:
    imported: int
    skipped: int
    gold: int = 0  # imported tasks flagged gold (connector.gold)
    gold_share: float = 0.0
    copies_removed: int = 0  # tasks stored twice by a batch sent again (remove_unjudged_copies)


def import_items(client: LabelStudioClient, project_id: int, items: Iterable[Item], placer: ImagePlacer,
                 progress: Callable[[int], None] | None = None, round_: int = 1,
                 schema: LabelingSchema | None = None, gold_share: float | None = None) -> ImportResult:
    """Create a task per item that the project does not have yet in this labeling round.

    Each round of the loop judges fresh candidates from the newest model, so it gets tasks of
    its own: annotations of earlier rounds stay attached to the candidates they judged.
    Idempotent by (item_id, round): a repeated or interrupted import (even one killed mid-POST)
    run again creates only the tasks still missing.
    `gold_share`: that share of the items' tasks is flagged gold (connector.gold); None: the share
    the project's gold tasks record (from `init --gold-share` or an earlier import), else none.
    """
    from connector.gold import GOLD, check_share, gold_meta

    if schema is None:  # refused here, before any task is created, when the config lacks what the method needs
        from connector.project import get_project, require_schema

        schema = require_schema(get_project(client, project_id))
    have, recorded = _project_index(client, project_id)
    share = check_share(gold_share if gold_share is not None else recorded or 0.0)
    batch: list[dict] = []
    imported = skipped = gold = 0

    resent = False

    def flush() -> None:
        nonlocal imported, resent
        if batch:
            resent |= post_tasks(client, project_id, batch)
            imported += len(batch)
            if progress:
                progress(len(batch))
            batch.clear()

    for item in items:
        if (item.item_id, round_) in have:
            skipped += 1
            if progress:  # progress counts items handled, skipped ones too, so the bar reaches its total
                progress(1)
            continue
        have.add((item.item_id, round_))
        task = task_data(item, placer.url(item.image), schema, round_)
        if share:
            task["meta"] = gold_meta(task.get("meta"), item.item_id, share)
            gold += task["meta"].get(GOLD) is True
        batch.append(task)
        if len(batch) >= BATCH:
            flush()
    flush()
    removed = remove_unjudged_copies(client, project_id) if resent else 0
    return ImportResult(imported, skipped, gold, share, removed)


def read_items(path: Path) -> Sequence[Item]:
    """Items from VQA-X (either layout), JSONL, CSV or a folder with a sidecar (illume.datasets)."""
    from illume.datasets import read_items as read

    return read(path)
