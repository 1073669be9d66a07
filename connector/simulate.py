"""Simulated annotators: a critic (the method's ROUGE-L critic by default, SPEC section 1) ticks
candidates through the API.

Each simulated annotator is a Label Studio user of its own (created on first use), so
several of them exercise overlap, majority voting and agreement like a real crowd.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from connector.client import LabelStudioClient
from connector.importing import task_references
from connector.project import NONE_ALIAS, NONE_CONTROL, require_candidates
from illume.critic import Critic, NoisyAnnotator, make_critic
from illume.errors import IllumeError


def simulated_user(client: LabelStudioClient, index: int) -> int:
    email = f"simulated-annotator-{index}@illume.local"
    for user in client.get("/api/users/"):
        if user.get("email") == email:
            return user["id"]
    return client.post("/api/users/", {"email": email, "username": f"simulated-{index}",
                                       "first_name": "Simulated", "last_name": f"annotator {index}"})["id"]


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
    control = require_candidates(project)
    has_none = f'name="{NONE_CONTROL}"' in project.get("label_config", "")
    critic = critic or make_critic()
    crowd = [(simulated_user(client, i), NoisyAnnotator(critic, error_rate, seed + i)) for i in range(annotators)]
    result = SimulationResult(0, 0, 0, 0)
    for task in client.pages("/api/tasks", {"project": project["id"], "fields": "all"}, page_size=200):
        data = task.get("data") or {}
        options = [c for c in data.get("candidates") or [] if isinstance(c, dict) and c.get("value")]
        if not options:
            result.skipped_without_candidates += 1
            continue
        references = task_references(task)
        done = set(task.get("annotators") or [])
        annotated_before = result.annotations
        for user, annotator in crowd:
            if user in done:
                continue
            ticks = annotator.tick([c["value"] for c in options], references)
            chosen = [c.get("alias", c["value"]) for c, ok in zip(options, ticks) if ok]
            results = []
            if chosen:
                results.append({"from_name": control, "to_name": "image", "type": "choices",
                                "value": {"choices": chosen}})
            elif has_none:
                results.append({"from_name": NONE_CONTROL, "to_name": "image", "type": "choices",
                                "value": {"choices": [NONE_ALIAS]}})
            client.post(f"/api/tasks/{task['id']}/annotations", {"result": results, "completed_by": user})
            result.annotations += 1
            result.ticked += len(chosen)
            result.shown += len(options)
        if progress and result.annotations > annotated_before:  # tasks annotated now, not in earlier rounds
            progress(1)
    return result
