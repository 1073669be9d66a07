"""Simulated annotators: a critic ticks candidates through the API. The default critic ("auto")
checks Shapes-X candidates against the task's scene (task meta, illume.datasets.shapes_truth)
and judges the others by the method's ROUGE-L (SPEC section 1).

Each simulated annotator is a Label Studio user of its own (created on first use), so
several of them exercise overlap, majority voting and agreement like a real crowd.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from illume.labelstudio.client import LabelStudioClient, send_checked
from illume.labelstudio.candidates import task_options
from illume.labelstudio.task import task_references
from connector.project import require_schema
from illume.critic import Critic, NoisyAnnotator, Subject, make_critic
from illume.datasets.shapes_truth import scene_of
from illume.errors import IllumeError
from illume.labeling_schema import LabelingSchema


def task_subject(task: dict, schema: LabelingSchema) -> Subject:
    """The task's question and answer, and its scene (Shapes-X tasks carry it in their meta)."""
    data = task.get("data") or {}
    return Subject(str(data.get(schema.question) or ""), str(data.get(schema.answer) or ""), scene_of(task.get("meta")))


def simulated_user(client: LabelStudioClient, index: int) -> int:
    email = f"simulated-annotator-{index}@illume.local"
    for user in client.sdk.users.list():
        if user.email == email:
            return user.id
    return client.sdk.users.create(email=email, username=f"simulated-{index}", first_name="Simulated",
                                   last_name=f"annotator {index}").id


@dataclass
class SimulationResult:
    annotations: int
    ticked: int
    shown: int
    skipped_without_candidates: int


def simulate(client: LabelStudioClient, project: dict, annotators: int = 1, critic: Critic | None = None,
             error_rate: float = 0.0, seed: int = 0,
             progress: Callable[[int], None] | None = None) -> SimulationResult:
    """Annotate every task that has candidates and lacks an annotation by a simulated annotator."""
    if annotators < 1:
        raise IllumeError(f"--annotators must be at least 1, got {annotators}", "Pass e.g. --annotators 3.")
    schema = require_schema(project)
    critic = critic or make_critic()
    crowd = [(simulated_user(client, i), NoisyAnnotator(critic, error_rate, seed + i)) for i in range(annotators)]
    result = SimulationResult(0, 0, 0, 0)
    for task in client.pages("/api/tasks", {"project": project["id"], "fields": "all"}, page_size=200):
        if progress:  # every task looked at, so the bar reaches the project's task count
            progress(1)
        data = task.get("data") or {}
        options = task_options(data, schema)
        if not options:
            result.skipped_without_candidates += 1
            continue
        references = task_references(task)
        subject = task_subject(task, schema)
        done = set(task.get("annotators") or [])
        for user, annotator in crowd:
            if user in done:
                continue
            ticks = annotator.tick([option.text for option in options], references, subject)
            chosen = [option.alias for option, ok in zip(options, ticks) if ok]
            results = [schema.ticks(chosen)] if chosen else [r for r in [schema.none()] if r is not None]
            save_annotation(client, task["id"], user, results)
            result.annotations += 1
            result.ticked += len(chosen)
            result.shown += len(options)
    return result


def save_annotation(client: LabelStudioClient, task_id: int, user: int, results: list) -> None:
    """POST one annotation, never blindly twice: after an unclear answer, send again only if the
    task still has no annotation by this user (a retry must not add a second vote)."""
    def send(_: list) -> None:
        client.request("POST", f"/api/tasks/{task_id}/annotations/", json={"result": results, "completed_by": user},
                       retry=False)

    def missing(pending: list) -> list:
        held = client.get(f"/api/tasks/{task_id}/annotations/")
        return [] if any((a.get("completed_by") == user) for a in held or []) else pending

    send_checked(send, [user], missing, f"saving a simulated annotation on task {task_id}",
                 "Run `illume-sync annotate --simulate` again: tasks this annotator already judged are skipped.")

