"""Ask Label Studio to fetch predictions (from the connected ML backend) for tasks lacking one.

Label Studio's Data Manager action `retrieve_tasks_predictions` sends the selected tasks to
the backend in one /predict call; batches stay small so each call ends well inside Label
Studio's predict timeout (ML_TIMEOUT_PREDICT, 100 s by default). The action is not retried
blindly: after an unclear outcome (a lost connection, a 502 from a proxy) the batch's tasks
are listed again and only those still lacking a prediction are asked for again.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from illume.labelstudio.client import LabelStudioClient, send_checked
from connector.progress import announce_total
from connector.project import follow_backend_version
from illume.errors import IllumeError


def project_predictions(client: LabelStudioClient, project_id: int) -> dict[int, dict]:
    """Every prediction of the project by id (task, model_version, score, result), in one request.

    Label Studio 1.23.2's JSON export lists a task's predictions as ids only.
    """
    found = client.sdk.predictions.list(project=int(project_id), request_options={"timeout_in_seconds": 600})
    return {p.id: p.dict() for p in found if p.id is not None}


def tasks_without_prediction(client: LabelStudioClient, project_id: int, version: str) -> list[int]:
    """Open tasks lacking a prediction of this version.

    Tasks somebody already annotated are done: re-predicting them would only append options
    (illume.labelstudio.candidates), which nobody judges any more.
    """
    missing = []
    # Only the "all" field set lists predictions; the short listing's version field is empty.
    for task in client.pages("/api/tasks", {"project": project_id, "fields": "all"}, page_size=500):
        if task.get("total_annotations") or task.get("cancelled_annotations"):
            continue
        versions = {str(p.get("model_version")) for p in task.get("predictions") or []}
        if not versions or (version and version not in versions):
            missing.append(task["id"])
    return sorted(missing)


def retrieve_predictions(client: LabelStudioClient, project_id: int, batch: list[int], version: str) -> None:
    """Label Studio's own action for these tasks; after an unclear outcome, only the tasks still
    lacking a prediction of `version` are asked for again."""
    def missing(pending: list[int]) -> list[int]:
        still = set(tasks_without_prediction(client, project_id, version))
        return [task for task in pending if task in still]

    _retrieve(client, project_id, batch, missing,
              "Run the same command again: tasks that got a prediction are skipped.")


def retrieve_tasks(client: LabelStudioClient, project_id: int, batch: list[int], version: str) -> None:
    """The same action for chosen tasks, annotated ones included (`resample`)."""
    def missing(pending: list[int]) -> list[int]:
        return [task for task in pending
                if not any(p.model_version == version for p in client.sdk.predictions.list(task=task))]

    _retrieve(client, project_id, batch, missing, "Run the same command again for the tasks it names.")


def _retrieve(client: LabelStudioClient, project_id: int, batch: list[int],
              missing: Callable[[list[int]], list[int]], todo: str) -> None:
    def send(pending: list[int]) -> None:
        client.request("POST", "/api/dm/actions", json={"selectedItems": {"all": False, "included": pending}},
                       params={"id": "retrieve_tasks_predictions", "project": project_id}, timeout=600, retry=False)

    send_checked(send, batch, missing, f"asking Label Studio for predictions of {len(batch)} tasks", todo)


def store_prediction(client: LabelStudioClient, task_id: int, prediction: dict) -> None:
    """POST one prediction (offline sampling) exactly once: after an unclear outcome, it is sent
    again only if the task still lacks a prediction of its model version."""
    def send(_: list[int]) -> None:
        client.request("POST", "/api/predictions", json={"task": task_id, **prediction}, retry=False)

    def missing(pending: list[int]) -> list[int]:
        stored = client.sdk.predictions.list(task=task_id)
        return [] if any(p.model_version == prediction["model_version"] for p in stored) else pending

    send_checked(send, [task_id], missing, f"storing the prediction of task {task_id}",
                 "Run the same command again: tasks that got a prediction are skipped.")


@dataclass
class PredictResult:
    requested: int
    predicted: int
    version: str


def predict_missing(client: LabelStudioClient, project: dict, batch_size: int = 16,
                    progress: Callable[[int], None] | None = None) -> PredictResult:
    if batch_size < 1:
        raise IllumeError(f"--batch-size must be at least 1, got {batch_size}", "Pass e.g. --batch-size 16.")
    version = follow_backend_version(client, project)
    missing = tasks_without_prediction(client, project["id"], version)
    announce_total(progress, len(missing))
    for start in range(0, len(missing), batch_size):
        batch = missing[start:start + batch_size]
        retrieve_predictions(client, project["id"], batch, version)
        if progress:
            progress(len(batch))
    still = set(tasks_without_prediction(client, project["id"], version))
    follow_backend_version(client, project)  # now that predictions of this version exist
    return PredictResult(len(missing), len([t for t in missing if t not in still]), version)
