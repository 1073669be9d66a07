"""Simulated annotators: a critic ticks candidates through the API. The default critic ("auto")
checks Shapes-X candidates against the task's scene (task meta, illume.datasets.shapes_truth)
and judges the others by the method's ROUGE-L (SPEC section 1).

Each simulated annotator is a Label Studio user of its own (created on first use), so
several of them exercise overlap, majority voting and agreement like a real crowd. Each may
have an error rate of its own (a careless one among careful ones), and a task may be judged by
only some of them (`per_task`), as a crowd spreads over a queue.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Sequence

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


def error_rates(error_rate: float | Sequence[float], annotators: int) -> list[float]:
    """One error rate per simulated annotator: the same for all, or one each (--error-rate 0.05,0.5)."""
    rates = [float(error_rate)] if isinstance(error_rate, (int, float)) else [float(r) for r in error_rate]
    if len(rates) == 1:
        rates = rates * annotators
    if len(rates) != annotators:
        raise IllumeError(f"--error-rate gives {len(rates)} rates for {annotators} annotators",
                          "Give one rate for all, or one per annotator (comma-separated, as many as --annotators).")
    if not all(0.0 <= r <= 1.0 for r in rates):
        raise IllumeError(f"error rates must be between 0 and 1, got {rates}", "Pass e.g. --error-rate 0.05,0.5.")
    return rates


def task_crowd(crowd: list, task_id: Any, per_task: int | None, seed: int) -> list:
    """The annotators that judge this task: all, or `per_task` of them drawn for the task (the same
    draw on every run, so a re-run completes the same people's work)."""
    if per_task is None or per_task >= len(crowd):
        return crowd
    return random.Random(f"{seed}:{task_id}").sample(crowd, per_task)


def simulate(client: LabelStudioClient, project: dict, annotators: int = 1, critic: Critic | None = None,
             error_rate: float | Sequence[float] = 0.0, seed: int = 0,
             progress: Callable[[int], None] | None = None, per_task: int | None = None) -> SimulationResult:
    """Annotate every task that has candidates and lacks an annotation by a simulated annotator.

    `error_rate`: one for all, or one per annotator; `per_task`: each task is judged by that many
    of the `annotators`, drawn per task (None: by all of them)."""
    if annotators < 1:
        raise IllumeError(f"--annotators must be at least 1, got {annotators}", "Pass e.g. --annotators 3.")
    if per_task is not None and per_task < 1:
        raise IllumeError(f"--per-task must be at least 1, got {per_task}", "Pass e.g. --per-task 3.")
    schema = require_schema(project)
    critic = critic or make_critic()
    crowd = [(simulated_user(client, i), NoisyAnnotator(critic, rate, seed + i))
             for i, rate in enumerate(error_rates(error_rate, annotators))]
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
        for user, annotator in task_crowd(crowd, task.get("id"), per_task, seed):
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

