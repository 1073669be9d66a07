"""One training round on what annotators finished: what Label Studio's "Start training" runs.

`illume-sync round --project P --run-dir R --base-model M ...` exports the project's completed
tasks that no earlier round trained on (merged with the previous round's rows and pairs),
trains an adapter on them, gates and promotes it: the round step every path that trains shares
(connector.round_step: one record, `<run-dir>/rounds.json`, versions illume-round-<n>). Unlike
`loop`, it imports nothing: the tasks are the ones people annotated in Label Studio. After a
promotion the project's open tasks get the new model's candidates.

A round interrupted after its export trains on that export when the button is pressed again (an
interrupted training run resumes from its checkpoint); the run directory's lock keeps two presses
from running two rounds in it at once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from illume.labelstudio.client import LabelStudioClient
from connector.annotator_quality import QualitySettings
from connector.predicting import predict_missing
from connector.project import project_backends
from connector.promotion import Backend
from connector.round_step import EXPORTED, TRAINED, VERSION_PREFIX, RoundStep, TrainingSettings, exclusive
from illume.errors import IllumeError
from illume.images import ImagePolicy


@dataclass
class RoundConfig:
    project: dict
    run_dir: Path
    base_model: str
    eval_items: Path | None = None
    min_agreement: int | None = None
    min_annotations: int | None = None  # a task is complete with this many annotations (None: the project's overlap)
    serving_adapter: str | None = None  # what the backend serves before the first round (None: the base model)
    backend: Backend | None = None
    training: TrainingSettings = field(default_factory=TrainingSettings)
    policy: ImagePolicy | None = None  # export's image policy (None: this Label Studio and data: URIs)
    method: str = "snapshot"  # how export reads the tasks (connector.export_project)
    version_prefix: str = VERSION_PREFIX
    predict_batch: int = 16  # open tasks per prediction request when refreshing them after a promotion
    quality: QualitySettings | None = None  # annotator quality: scored in the manifest; its min_quality leaves people out


def refresh_open_tasks(client: LabelStudioClient, project: dict, batch_size: int,
                       say: Callable[[str], None]) -> dict[str, Any]:
    """After a promotion: the project follows the version the backend serves now, and the open
    (unannotated) tasks get its candidates, so the label stream, pre-ticks and Label Studio's own
    "Retrieve predictions" all use the new model. Annotated tasks keep what they judged."""
    if not project_backends(client, project["id"]):
        say("  the project has no ML backend connected: its open tasks keep their candidates")
        return {"version": None, "tasks": 0}
    result = predict_missing(client, project, batch_size)
    say(f"  project {project['id']} now uses {result.version!r}: {result.predicted} of {result.requested} open "
        f"tasks got its candidates")
    return {"version": result.version, "tasks": result.predicted, "requested": result.requested}


def run_round(client: LabelStudioClient, config: RoundConfig, say: Callable[[str], None] = lambda _: None,
              progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Export what is new, train, promote; the round's record (as rounds.json keeps it)."""
    run_dir = Path(config.run_dir).resolve()
    with exclusive(run_dir):
        step = RoundStep(run_dir, config.base_model, config.training, config.eval_items, config.backend, say,
                         echo_training=True, version_prefix=config.version_prefix)
        state = step.state
        if "adapter" not in state.serving:
            state.serving.update(adapter=config.serving_adapter, version=None)
        record = state.round(state.open_round())
        # the first line names the round and the project (ml_backend's training runs read it)
        say(f"round {record.round}: exporting completed tasks of project {config.project['id']} "
            f"({len(state.trained_tasks)} already trained on)" if EXPORTED not in record.done else
            f"round {record.round}: training on its export of project {config.project['id']} (interrupted before)")
        if EXPORTED not in record.done:
            step.export(client, config.project, record, min_agreement=config.min_agreement,
                        min_annotations=config.min_annotations, progress=progress, policy=config.policy,
                        method=config.method, quality=config.quality)
            record.done.append(EXPORTED)
            step.save()
        result = step.train(record)
        record.done.append(TRAINED)
        step.save()
        if result.promoted and result.serving_version:  # recorded first: the round stands if this fails
            try:
                record.refreshed = refresh_open_tasks(client, config.project, config.predict_batch, say)
            except IllumeError as exc:
                say(f"  the open tasks keep their candidates: {exc.what} -> run `illume-sync predict`")
                record.refreshed = {"error": exc.what}
            step.save()
        return record.to_json()
