"""Where a project stands: tasks, completed, predictions by model version, acceptance, pre-ticks
left standing, "None" conflicts, per labeling round the candidates' diversity and (where people
annotated) annotator-seconds, each annotator's agreement with gold tasks and with the majority,
backend.

"Completed" means what export and rounds train on: at least the project's overlap in
annotations, one per person (or --min-annotations); annotated tasks below that, and tasks
only skipped, are counted apart."""
from __future__ import annotations

from collections import Counter
from typing import Any

from illume.labelstudio.client import LabelStudioClient
from connector.annotator_quality import AnnotatorQuality, QualitySettings, user_names
from connector.backend_client import backend_health
from connector.export import iter_tasks
from connector.judging import NOTE_KEYS, judge_task, pretick_summary
from illume.labelstudio.task import task_round
from connector.predicting import project_predictions
from connector.project import project_backends, require_schema, required_annotations
from connector.task_shape import FIX_TASK, task_problem
from illume.metrics import annotation_effort, candidate_diversity


REFUSALS_SHOWN = 5


def prediction_version(prediction: Any, known: dict[int, dict]) -> str:
    """A task's prediction as the export lists it (an id in Label Studio 1.23.2, or an object)."""
    if isinstance(prediction, dict):
        return str(prediction.get("model_version") or "")
    return str((known.get(prediction) or {}).get("model_version") or "")


def _round_summary(feedback: list) -> dict[str, Any]:
    """Diversity of the candidates judged; annotator-seconds only where Label Studio timed people."""
    summary: dict[str, Any] = {"completed": len(feedback), "diversity": candidate_diversity(feedback)}
    effort = annotation_effort(feedback)
    if effort["annotations_timed"]:
        summary["effort"] = effort
    return summary


def project_status(client: LabelStudioClient, project: dict, backend_url: str | None = None,
                   min_annotations: int | None = None, quality: QualitySettings | None = None) -> dict[str, Any]:
    """The report; "annotator_quality" holds each annotator's agreement with gold and with the others'
    majority over every annotated task (connector.annotator_quality; `annotator_table` makes rows of it)."""
    required = required_annotations(project, min_annotations)
    tasks = completed = below_min = skipped_only = cancelled = shown = accepted = 0
    by_version: Counter[str] = Counter()
    refused: list[dict[str, Any]] = []  # tasks not shaped as Label Studio writes them (connector.task_shape)
    notes: Counter = Counter({key: 0 for key in NOTE_KEYS})
    by_round: dict[int, list] = {}  # round -> Feedback of its completed tasks
    schema = require_schema(project)
    scores = AnnotatorQuality(schema, quality)
    predictions = project_predictions(client, project["id"])
    with client.stream(f"/api/projects/{project['id']}/export",
                       params={"exportType": "JSON", "download_all_tasks": "true"}) as body:
        for task in iter_tasks(body):
            tasks += 1
            if (problem := task_problem(task, schema)) is not None:  # as the export leaves it out
                refused.append({"task": task.get("id") if isinstance(task, dict) else None, "reason": problem[:500]})
                continue
            for version in {prediction_version(p, predictions) for p in task.get("predictions") or []}:
                by_version[version] += 1
            skips = sum(1 for a in task.get("annotations") or [] if a.get("was_cancelled"))
            cancelled += skips
            scores.add(task)
            judged = judge_task(task, schema)
            if judged is None:
                skipped_only += skips > 0
            elif judged.feedback.annotators < required:
                below_min += 1
            else:
                completed += 1
                shown += len(judged.feedback.candidates)
                accepted += len(judged.feedback.accepted)
                notes.update(judged.notes)
                by_round.setdefault(task_round(task.get("data") or {}), []).append(judged.feedback)
    backends = project_backends(client, project["id"])
    report: dict[str, Any] = {
        "project": f"{project['id']} {project.get('title')!r}",
        "tasks": tasks, "completed": completed, "open": tasks - completed, "min_annotations": required,
        "below_min_annotations": below_min, "skipped_only": skipped_only, "cancelled_annotations": cancelled,
        "tasks_by_model_version": dict(sorted(by_version.items())),
        "refused_tasks": len(refused),
        "acceptance_rate": round(accepted / shown, 4) if shown else None,
        "preticks": pretick_summary(notes, accepted),
        "none_with_ticks": notes["none_with_ticks"],
        "rounds": {r: _round_summary(by_round[r]) for r in sorted(by_round)},
        "annotator_quality": scores.summary(user_names(client)),
        "project_model_version": project.get("model_version") or None,
        "backends": [{"url": b.get("url"), "title": b.get("title"), "state": b.get("state"),
                      "model_version": b.get("model_version")} for b in backends],
    }
    if refused:  # the first few, with what to do; `export` lists them all in its manifest
        report["refused_tasks_first"] = refused[:REFUSALS_SHOWN]
        report["refused_tasks_todo"] = FIX_TASK
    if backend_url:
        report["backend_health"] = backend_health(backend_url)
    return report
