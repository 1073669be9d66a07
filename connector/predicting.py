"""Ask Label Studio to fetch predictions (from the connected ML backend) for tasks lacking one.

Label Studio's Data Manager action `retrieve_tasks_predictions` sends the selected tasks to
the backend in one /predict call; batches stay small so each call ends well inside Label
Studio's predict timeout (ML_TIMEOUT_PREDICT, 100 s by default).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from connector.client import LabelStudioClient
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

    Tasks somebody already annotated keep the candidates they judged: re-sampling would
    rewrite the options under their ticks.
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
    for start in range(0, len(missing), batch_size):
        batch = missing[start:start + batch_size]
        client.post("/api/dm/actions", {"selectedItems": {"all": False, "included": batch}},
                    params={"id": "retrieve_tasks_predictions", "project": project["id"]}, timeout=600)
        if progress:
            progress(len(batch))
    still = set(tasks_without_prediction(client, project["id"], version))
    follow_backend_version(client, project)  # now that predictions of this version exist
    return PredictResult(len(missing), len([t for t in missing if t not in still]), version)
