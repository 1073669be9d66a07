"""New candidates for chosen tasks, keeping every option and annotation they already have.

Label Studio skips a task that holds a prediction of the current model version, so asking it
again ("Retrieve predictions") changes nothing. `resample` therefore:
1. marks each task's request for fresh candidates (its `meta.candidates_resample`,
   illume.labelstudio.candidates.request_resample);
2. deletes the task's prediction of the served version (only that one: earlier versions and
   every annotation stay; an annotation's ticks refer to aliases in the task's data, not to a
   prediction);
3. has Label Studio retrieve predictions for the tasks (its own Data Manager action), so the
   backend samples again and appends the texts not offered yet under new aliases, and clears
   the mark.
Existing options keep their alias and wording (the fresh ones are shown first, as a new
model version's are); nothing is duplicated (a text already offered keeps its alias). After an unclear outcome only the tasks still lacking a prediction are asked
for again. Running it again asks for yet more candidates.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from connector.predicting import retrieve_tasks
from connector.progress import announce_total
from connector.project import follow_backend_version
from illume.errors import IllumeError
from illume.labeling_schema import LabelingSchema
from illume.labelstudio.candidates import StoredTask, request_resample, stored_tasks
from illume.labelstudio.client import LabelStudioClient
from illume.labelstudio.task import parse_label_config


@dataclass
class TaskResample:
    task: int
    kept: int  # options the task had, all still there with their alias and wording
    added: list[str] = field(default_factory=list)  # texts added under new aliases, in the order shown
    answered: bool = True  # False: the backend has not written for this task (see its log)


@dataclass
class ResampleResult:
    version: str
    tasks: list[TaskResample]

    @property
    def added(self) -> int:
        return sum(len(t.added) for t in self.tasks)

    @property
    def unanswered(self) -> list[int]:
        return [t.task for t in self.tasks if not t.answered]

    @property
    def nothing_new(self) -> list[int]:
        return [t.task for t in self.tasks if t.answered and not t.added]


def resample(client: LabelStudioClient, project: dict, task_ids: list[int], batch_size: int = 16,
             progress: Callable[[int], None] | None = None) -> ResampleResult:
    if batch_size < 1:
        raise IllumeError(f"--batch-size must be at least 1, got {batch_size}", "Pass e.g. --batch-size 16.")
    ids = sorted(set(task_ids))
    fields = parse_label_config(project.get("label_config"))
    version = follow_backend_version(client, project)
    before = stored_tasks(client, project["id"], ids)
    unknown = [task for task in ids if task not in before]
    if unknown:
        raise IllumeError(f"no task {', '.join(map(str, unknown[:20]))} in project {project['id']}",
                          "Pass ids of the project's tasks (the Data Manager's ID column).")
    announce_total(progress, len(ids))
    for start in range(0, len(ids), batch_size):
        batch = ids[start:start + batch_size]
        # read again just before asking: the request rewrites the task's meta, which a write since
        # `before` (another batch's, the backend's) may have added to (candidates_appended, _retired)
        now = stored_tasks(client, project["id"], batch)
        for task in batch:
            request_resample(client, task, now.get(task, before[task]))
            drop_prediction(client, task, version)
        retrieve_tasks(client, project["id"], batch, version)
        if progress:
            progress(len(batch))
    after = stored_tasks(client, project["id"], ids)
    return ResampleResult(version, [compare(task, before[task], after.get(task), fields) for task in ids])


def drop_prediction(client: LabelStudioClient, task: int, version: str) -> None:
    """Delete the task's predictions of `version` (Label Studio predicts only tasks lacking one)."""
    for found in client.sdk.predictions.list(task=task):
        if found.model_version == version and found.id is not None:
            client.request("DELETE", f"/api/predictions/{found.id}/", expect=(200, 204, 404))


def compare(task: int, before: StoredTask, after: StoredTask | None, fields: LabelingSchema) -> TaskResample:
    """What the resample changed in one task; refuses loudly if an earlier option was lost or changed."""
    earlier = [o for o in before.data.get(fields.candidates) or [] if isinstance(o, dict)]
    now = [o for o in after.data.get(fields.candidates) or [] if isinstance(o, dict)] if after is not None else earlier
    by_alias = {o.get("alias"): o for o in now}
    if any(by_alias.get(o.get("alias")) != o for o in earlier):
        raise IllumeError(f"task {task}: its earlier candidates changed while new ones were asked for",
                          "Report this with the task id: the candidates contract was broken.")
    known = {o.get("alias") for o in earlier}
    added = [str(o.get("value")) for o in now if o.get("alias") not in known]
    return TaskResample(task, len(earlier), added, answered=after is not None and not after.resample_requested)
