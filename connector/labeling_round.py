"""One training round on what annotators finished: what Label Studio's "Start training" runs.

`illume-sync round --project P --run-dir R --base-model M ...` exports the project's completed
tasks that no earlier round trained on (merged with the previous round's rows and pairs),
trains an adapter on them, and hands it to the one promotion step (connector.promotion: gate,
atomic promotion.json, backend reload). Unlike `loop`, it imports nothing: the tasks are the
ones people annotated in Label Studio.

State lives in `<run-dir>/rounds.json` (written atomically after each round): the rounds done
(with the annotation effort: Label Studio's lead_time summed per round and per accepted
rationale, as `loop` and `status` report it), the task ids trained on, and the adapter served.
A lock file keeps two presses of the button from running two rounds in the same run directory
at once.
"""
from __future__ import annotations

import fcntl
import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from illume.labelstudio.client import LabelStudioClient
from connector.export_project import export_project, held_out_ids
from connector.predicting import predict_missing
from connector.project import project_backends
from connector.promotion import Backend, GateSettings, promote, reference_metrics
from connector.retention import Retention
from connector.training_job import accuracy_floor, read_eval_items, run_training, training_command
from illume.errors import IllumeError
from illume.images import ImagePolicy
from illume.metrics import annotation_effort
from illume.records import Feedback, atomic_write_text, iter_jsonl
from illume.layout import EXPORT_FEEDBACK, ROUNDS_STATE, ROUND_EXPORT, ROUND_TRAIN, TRAIN_LOG, round_path

LOCK_FILE = ".round.lock"


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
    gate: GateSettings = field(default_factory=GateSettings)
    processes: int = 1
    train_args: Sequence[str] = ()
    retention: Retention = field(default_factory=Retention)  # how training keeps answers (issue 22)
    policy: ImagePolicy | None = None  # export's image policy (None: this Label Studio and data: URIs)
    method: str = "snapshot"  # how export reads the tasks (connector.export_project)
    version_prefix: str = "illume-round"
    predict_batch: int = 16  # open tasks per prediction request when refreshing them after a promotion


def read_state(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / ROUNDS_STATE
    if not path.is_file():
        return {"rounds": [], "trained_tasks": [], "serving": {}}
    return json.loads(path.read_text(encoding="utf-8"))


@contextmanager
def _exclusive(run_dir: Path) -> Iterator[None]:
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK_FILE, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise IllumeError(f"A round is already running in {run_dir}",
                              "Wait for it to finish (its log says where it is), then start training again.") from exc
        yield


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
    """Export what is new, train, promote; the round's record (also appended to rounds.json)."""
    run_dir = Path(config.run_dir).resolve()
    with _exclusive(run_dir):
        state = read_state(run_dir)
        number = len(state["rounds"]) + 1
        round_dir = round_path(run_dir, number)
        previous = Path(state["rounds"][-1]["export"]) if state["rounds"] else None
        trained = frozenset(state["trained_tasks"])
        say(f"round {number}: exporting completed tasks of project {config.project['id']} "
            f"({len(trained)} already trained on)")
        manifest = export_project(client, config.project, round_dir / ROUND_EXPORT, config.min_agreement,
                                  previous if previous and previous.is_dir() else None, progress,
                                  policy=config.policy, method=config.method, exclude_tasks=trained,
                                  min_annotations=config.min_annotations,
                                  answer_pool=config.retention.answer_pool(), held_out=held_out_ids(config.eval_items))
        tasks = manifest["task_ids"]
        effort = annotation_effort(list(iter_jsonl(round_dir / ROUND_EXPORT / EXPORT_FEEDBACK, Feedback)))
        say(f"  {len(tasks)} tasks ({manifest['counts']['below_min_annotations']} more wait for "
            f"{manifest['counts']['min_annotations']} annotations), {manifest['counts']['rationale_rows']} rationale rows, "
            f"{manifest['counts']['pairs']} preference pairs; {effort['annotator_seconds']} annotator-seconds "
            f"({effort['annotations_timed']} annotations timed), {effort['seconds_per_accepted_rationale']} "
            f"per accepted rationale")
        version = f"{config.version_prefix}-{number}"
        eval_items = read_eval_items(config.eval_items) if config.eval_items else []
        serving = state["serving"].get("adapter", config.serving_adapter)
        serving_metrics, baseline = state["serving"].get("metrics"), state.get("baseline")
        if eval_items:  # once per run (the model as built) or per promotion (the serving model), kept in the state
            serving_metrics, baseline = reference_metrics(config.base_model, serving, eval_items, config.gate,
                                                          serving_metrics, baseline)
            state["baseline"] = baseline
            state["serving"]["metrics"] = serving_metrics
            atomic_write_text(run_dir / ROUNDS_STATE, json.dumps(state, indent=1, sort_keys=True))
        floor = accuracy_floor(config.gate.max_accuracy_drop, baseline, serving_metrics)
        extra = config.retention.train_args(serving, config.gate.metric, floor) + list(config.train_args)
        command = training_command(round_dir / ROUND_EXPORT, config.base_model, round_dir / ROUND_TRAIN, config.eval_items,
                                   version, config.processes, (round_dir / ROUND_TRAIN).is_dir(), extra,
                                   config.gate.eval_batch_size)
        adapter = run_training(command, round_dir / TRAIN_LOG, echo=lambda line: say(f"  {line}"))
        result = promote(adapter, version, config.base_model, round_dir, eval_items=eval_items,
                         serving_adapter=serving, serving_metrics=serving_metrics, baseline_metrics=baseline,
                         settings=config.gate, backend=config.backend, say=say)
        record = {"round": number, "export": str(round_dir / ROUND_EXPORT), "tasks": tasks, "effort": effort,
                  "waiting_for_annotations": manifest["counts"]["below_min_annotations"],
                  "adapter": str(adapter), "version": version, "promoted": result.promoted,
                  "reason": result.reason, "serving_version": result.serving_version, "metrics": result.metrics,
                  "retention": config.retention.record(adapter, manifest)}
        state["rounds"].append(record)
        state["trained_tasks"] = sorted(trained | set(tasks))
        if result.promoted:
            state["serving"] = {"adapter": str(adapter), "version": version, "metrics": result.metrics}
        atomic_write_text(run_dir / ROUNDS_STATE, json.dumps(state, indent=1, sort_keys=True))
        if result.promoted and result.serving_version:  # recorded first: the round stands if this fails
            try:
                record["refreshed"] = refresh_open_tasks(client, config.project, config.predict_batch, say)
            except IllumeError as exc:
                say(f"  the open tasks keep their candidates: {exc.what} -> run `illume-sync predict`")
                record["refreshed"] = {"error": exc.what}
            atomic_write_text(run_dir / ROUNDS_STATE, json.dumps(state, indent=1, sort_keys=True))
        return record
