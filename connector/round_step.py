"""One round step for every path that trains: export -> train -> gate/promote -> record.

`illume-sync round` (what Label Studio's "Start training" runs), `loop` (after its own import,
predict and annotate steps) and `train` (on an export it is handed) train, gate and promote
through the functions here, so a round exists one way:

* one record (`RoundRecord`) and one state file (`<run>/rounds.json`, illume.layout.RUN_STATE;
  a run directory of an older loop keeps its `loop.json`, which is read when no rounds.json is
  there), rounds keyed by number, round 0 the model as built;
* one version scheme: `<prefix>-<n>` (illume-round-1, illume-round-2, ...);
* one evaluation of each new adapter: when the training job chose its epoch on the held-out
  items, its evaluation of the kept epoch (illume.evaluation, the same items and settings) is the
  gate's; otherwise the gate evaluates it. That evaluation is the round record's metrics.

Each step is recorded (atomically) as done, so an interrupted round continues where it stopped
and an interrupted training run resumes from its last DeepSpeed checkpoint. A lock file keeps two
rounds (two presses of the button, a loop and a round) from running in one run directory at once.
"""
from __future__ import annotations

import fcntl
import json
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator

from connector.export_project import export_project, held_out_ids
from connector.promotion import Backend, GateSettings, Promotion, promote, reference_metrics
from connector.retention import Retention
from connector.training_job import accuracy_floor, read_eval_items, run_training, training_command
from illume.errors import IllumeError
from illume.labelstudio.client import LabelStudioClient
from illume.layout import (ADAPTER_META, EXPORT_FEEDBACK, LEGACY_LOOP_STATE, ROUND_EXPORT,
                           ROUND_LOCK, ROUND_TRAIN, RUN_CHECKPOINTS, RUN_EVAL, RUN_STATE, TRAIN_LOG, round_path)
from illume.metrics import annotation_effort, candidate_diversity
from illume.options import option
from illume.records import Feedback, atomic_write_text, iter_jsonl
from illume.run_diagnostics import preference_diagnostics

VERSION_PREFIX = "illume-round"
EXPORTED, TRAINED = "export", "train"  # the step names the round step records as done


@dataclass(frozen=True)
class TrainingSettings:
    """How a round trains and gates its adapter: what `train`, `round` and `loop` share (their
    options are generated from these fields, GateSettings' and Retention's)."""

    processes: int = option(1, "Training processes (>1 uses the deepspeed launcher).", min=1)
    dpo_weight: float = option(0.0, (
        "Also learn from what annotators did not tick: ILLUME loss + W x DPO on (accepted, unticked) pairs of the "
        "same item, length-normalised, beta 0.5 (0: ILLUME as published; 0.3 measured best, its gain over ILLUME "
        "not confirmed with today's defaults: benchmarks/README.md)."), min=0)
    train_args: tuple[str, ...] = ()  # the user's own arguments of `python -m training` (they win)
    gate: GateSettings = field(default_factory=GateSettings)
    retention: Retention = field(default_factory=Retention)  # how training keeps answers (issue 22)


@dataclass
class RoundRecord:
    """What one round did, as the run's state file keeps it (fields a path never fills stay None)."""

    round: int
    done: list[str] = field(default_factory=list)  # the steps finished (a resumed round skips them)
    seconds: dict[str, float] = field(default_factory=dict)  # per step
    # the loop's own steps
    imported: int | None = None  # the round's tasks in Label Studio (imported or already there)
    sampled_by: str | None = None  # the model version that gave the candidates
    predictions_by_version: dict[str, int] | None = None
    waiting: dict[str, Any] | None = None  # --wait-for-people: where the round's tasks stood when it went on
    skipped_tasks: int | None = None
    # export
    export: str | None = None
    tasks: list[int] = field(default_factory=list)  # the task ids exported (never trained on again)
    waiting_for_annotations: int | None = None  # tasks annotated, but not by enough people yet
    counts: dict[str, Any] | None = None
    acceptance: dict[str, Any] | None = None
    agreement: dict[str, Any] | None = None
    preticks: dict[str, Any] | None = None
    reconciliation: dict[str, Any] | None = None
    diversity: dict[str, Any] | None = None
    items_with_accepted: int | None = None
    items_judged: int | None = None
    effort: dict[str, Any] | None = None  # people annotated: Label Studio's lead_time, summed
    # train, gate, promote
    adapter: str | None = None
    version: str | None = None
    promoted: bool | None = None
    gate: str | None = None  # the gate's reason
    metrics: dict[str, Any] | None = None  # the adapter's held-out metrics (round 0: the model as built's)
    serving_version: str | None = None  # what the backend serves afterwards (None: no backend reloaded)
    preference: list[dict[str, float]] | None = None  # DPO diagnostics per epoch
    retention: dict[str, Any] | None = None
    refreshed: dict[str, Any] | None = None  # `round`: the open tasks given the promoted model's candidates

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, data: dict[str, Any], number: int | None = None) -> "RoundRecord":
        """A record as any version wrote it: older loops kept the task count as `tasks`, older rounds
        the gate's reason as `reason`."""
        data = dict(data)
        if isinstance(data.get("tasks"), int):
            data["imported"] = data.pop("tasks")
        if "reason" in data:
            data.setdefault("gate", data.pop("reason"))
        known = {f.name for f in fields(cls)}
        data.setdefault("round", number)
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class RunState:
    """A run directory's rounds (0: the model as built), the model served, the tasks trained on."""

    rounds: dict[int, RoundRecord] = field(default_factory=dict)
    serving: dict[str, Any] = field(default_factory=dict)  # adapter, version, metrics
    trained_tasks: list[int] = field(default_factory=list)

    @classmethod
    def load(cls, run_dir: Path) -> "RunState":
        path = state_path(run_dir)
        if path is None:
            return cls()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            rounds = data.get("rounds") or {}
            # older rounds.json: a list of the rounds that finished
            listed = rounds.items() if isinstance(rounds, dict) else (
                (r["round"], {"done": [EXPORTED, TRAINED], **r}) for r in rounds)
            state = cls({int(n): RoundRecord.from_json(r, int(n)) for n, r in listed}, data.get("serving") or {},
                        list(data.get("trained_tasks") or []))
        except (json.JSONDecodeError, TypeError, KeyError, ValueError, AttributeError) as exc:
            raise IllumeError(f"{path} is not a run's state file ({exc})",
                              "Use another --run-dir, or delete the file to start over.") from exc
        if data.get("baseline") and 0 not in state.rounds:  # older rounds kept the model as built apart
            state.rounds[0] = RoundRecord(0, metrics=data["baseline"], version="base", promoted=True)
        return state

    def save(self, run_dir: Path) -> None:
        data = {"rounds": {str(n): r.to_json() for n, r in sorted(self.rounds.items())}, "serving": self.serving,
                "trained_tasks": self.trained_tasks}
        atomic_write_text(Path(run_dir) / RUN_STATE, json.dumps(data, indent=1, sort_keys=True))

    def round(self, number: int) -> RoundRecord:
        return self.rounds.setdefault(number, RoundRecord(number))

    def open_round(self) -> int:
        """The round to work on: the newest one if it did not train yet, else the next one."""
        numbers = [n for n in self.rounds if n > 0]
        if numbers and TRAINED not in self.rounds[max(numbers)].done:
            return max(numbers)
        return max(numbers, default=0) + 1

    @property
    def baseline(self) -> dict[str, Any] | None:
        return self.rounds[0].metrics if 0 in self.rounds else None

    def rounds_json(self) -> dict[str, dict[str, Any]]:
        return {str(n): r.to_json() for n, r in sorted(self.rounds.items())}


def state_path(run_dir: Path) -> Path | None:
    """The run's state file: rounds.json, else an older loop's loop.json (None: no round ran there)."""
    for name in (RUN_STATE, LEGACY_LOOP_STATE):
        if (Path(run_dir) / name).is_file():
            return Path(run_dir) / name
    return None


def version_name(number: int, prefix: str = VERSION_PREFIX) -> str:
    return f"{prefix}-{number}"


@contextmanager
def exclusive(run_dir: Path) -> Iterator[None]:
    """Hold the run directory's round lock (refused at once while another round holds it)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ROUND_LOCK, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise IllumeError(f"A round is already running in {run_dir}",
                              "Wait for it to finish (its log says where it is), then start training again.") from exc
        yield


# ---------------------------------------------------------------------- training and the gate
def train_adapter(export: Path, base_model: str, out: Path, version: str, settings: TrainingSettings, *,
                  eval_items: Path | None = None, init_adapter: str | None = None, min_accuracy: float | None = None,
                  resume: bool | None = None, echo: Callable[[str], None] | None = None
                  ) -> tuple[Path, dict[str, Any] | None]:
    """Run the training job on an export; (the adapter, its held-out metrics when the job measured them).

    The held-out items reach the job only to choose the epoch (Retention.select_epoch): its evaluation
    of the kept epoch is then the adapter's, and nobody evaluates it again. `resume` None: resume
    when the run has checkpoints (an interrupted round)."""
    extra = settings.retention.train_args(init_adapter, settings.gate.metric, min_accuracy)
    if settings.dpo_weight:
        extra += ["--dpo-weight", f"{settings.dpo_weight:g}"]
    select_on = eval_items if settings.retention.select_epoch else None
    resume = (out / RUN_CHECKPOINTS).is_dir() if resume is None else resume
    command = training_command(export, base_model, out, select_on, version, settings.processes, resume,
                               extra + list(settings.train_args), settings.gate.eval_batch_size)
    adapter = run_training(command, out / TRAIN_LOG, echo=echo)
    return adapter, kept_epoch_metrics(adapter, out) if select_on else None


def kept_epoch_metrics(adapter: Path, out: Path) -> dict[str, Any] | None:
    """The training job's held-out evaluation of the epoch it kept as `adapter` (None: it evaluated none)."""
    meta_path = Path(adapter) / ADAPTER_META
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    epoch = meta.get("chosen_epoch") or meta.get("epoch")
    path = Path(out) / RUN_EVAL / f"epoch_{epoch}.json"
    if epoch is None or not path.is_file():
        return None
    metrics = json.loads(path.read_text(encoding="utf-8"))
    metrics.pop("examples", None)
    return metrics if "accuracy" in metrics else None  # an epoch without held-out items logs only its losses


def references(base_model: str, items: list, gate: GateSettings, state: RunState) -> tuple[dict | None, dict | None]:
    """(serving model's, model as built's) held-out metrics, each measured once per run or per
    promotion and kept in `state` (round 0 is the model as built)."""
    if not items:
        return None, None
    adapter = state.serving.get("adapter")
    serving, baseline = reference_metrics(base_model, adapter, items, gate, state.serving.get("metrics"),
                                          state.baseline)
    state.serving["metrics"] = serving
    built = baseline if baseline is not None else serving if adapter is None else None
    if built is not None and 0 not in state.rounds:
        state.rounds[0] = RoundRecord(0, done=[EXPORTED, TRAINED], metrics=built, version="base", promoted=True)
    return serving, baseline


# ---------------------------------------------------------------------- the round step
@dataclass
class RoundStep:
    """The export, train and gate steps of a run directory's rounds, each recorded in its state."""

    run_dir: Path
    base_model: str
    settings: TrainingSettings = field(default_factory=TrainingSettings)
    eval_items: Path | None = None  # held-out Item JSONL: the gate's (and the epoch choice's) items
    backend: Backend | None = None  # reloaded with a promoted adapter
    say: Callable[[str], None] = lambda _: None
    echo_training: bool = False  # the training job's output line by line through `say`
    version_prefix: str = VERSION_PREFIX

    def __post_init__(self) -> None:
        # adapters are recorded (and handed to the backend) under an absolute run directory
        self.run_dir = Path(self.run_dir).resolve()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.state = RunState.load(self.run_dir)
        self.items = read_eval_items(self.eval_items) if self.eval_items else []

    def save(self) -> None:
        self.state.save(self.run_dir)

    def dir(self, number: int, name: str) -> Path:
        return round_path(self.run_dir, number) / name

    def measure_references(self) -> tuple[dict | None, dict | None]:
        """The serving model's and the model as built's metrics (evaluated only when not known), saved."""
        if self.items and ("metrics" not in self.state.serving or 0 not in self.state.rounds):
            self.say(f"evaluating the serving model on {len(self.items)} held-out items")
        measured = references(self.base_model, self.items, self.settings.gate, self.state)
        self.save()
        return measured

    def export(self, client: LabelStudioClient, project: dict, record: RoundRecord, *, only_round: bool = False,
               min_agreement: int | None = None, min_annotations: int | None = None, people: bool = True,
               seed: int = 0, progress: Callable[[int], None] | None = None, **export_options: Any) -> dict:
        """Export the completed tasks no earlier round trained on (only this round's with `only_round`),
        merged with the previous round's rows and pairs; the manifest. `people`: annotations took
        people's time (recorded as the round's effort)."""
        number, out = record.round, self.dir(record.round, ROUND_EXPORT)
        previous = self.dir(number - 1, ROUND_EXPORT)
        manifest = export_project(client, project, out, min_agreement, previous if previous.is_dir() else None,
                                  progress, number if only_round else None, iteration=number,
                                  exclude_tasks=frozenset(self.state.trained_tasks), min_annotations=min_annotations,
                                  answer_pool=self.settings.retention.answer_pool(seed),
                                  held_out=held_out_ids(self.eval_items), **export_options)
        feedback = list(iter_jsonl(out / EXPORT_FEEDBACK, Feedback))
        counts = manifest["counts"]
        record.export, record.tasks, record.counts = str(out), list(manifest["task_ids"]), counts
        record.waiting_for_annotations = counts.get("below_min_annotations")
        record.acceptance, record.agreement = manifest["acceptance"], manifest["agreement"]
        record.preticks, record.reconciliation = manifest["preticks"], manifest["reconciliation"]
        record.diversity = candidate_diversity(feedback)
        record.items_with_accepted = sum(1 for f in feedback if f.accepted or f.written)
        record.items_judged = len(feedback)
        if people:  # what it cost them (Label Studio's lead_time); the simulator takes no time
            record.effort = annotation_effort(feedback)
        self.say(f"  {len(record.tasks)} tasks ({counts.get('below_min_annotations', 0)} more wait for "
                 f"{counts.get('min_annotations')} annotations); acceptance rate {manifest['acceptance']['rate']}, "
                 f"{record.items_with_accepted} of {len(feedback)} items have an accepted rationale; "
                 f"{counts['rationale_rows']} rationale rows, {counts['answer_rows']} answer-only rows, "
                 f"{counts['pairs']} preference pairs; {manifest['preticks']['accepted_preticked_unchanged']} "
                 f"accepted only as pre-ticks left standing, {manifest['reconciliation']['none_with_ticks']} 'None' "
                 "submitted with ticks")
        if record.effort:
            self.say(f"  {record.effort['annotator_seconds']} annotator-seconds ({record.effort['annotations_timed']} "
                     f"annotations timed), {record.effort['seconds_per_accepted_rationale']} per accepted rationale")
        return manifest

    def train(self, record: RoundRecord) -> Promotion:
        """Train on the round's export, gate the adapter (evaluated once), promote it; recorded in `record`."""
        number, out = record.round, self.dir(record.round, ROUND_TRAIN)
        export = self.dir(number, ROUND_EXPORT)
        version = version_name(number, self.version_prefix)
        serving_metrics, baseline = self.measure_references()
        serving = self.state.serving.get("adapter")
        # the epoch is chosen within the gate's accuracy bound, so that the kept one can pass it
        floor = accuracy_floor(self.settings.gate.max_accuracy_drop, baseline, serving_metrics)
        adapter, measured = train_adapter(export, self.base_model, out, version, self.settings,
                                          eval_items=self.eval_items, init_adapter=serving, min_accuracy=floor,
                                          echo=(lambda line: self.say(f"  {line}")) if self.echo_training else None)
        record.retention = self.settings.retention.record(adapter, export)
        result = promote(adapter, version, self.base_model, out, eval_items=self.items, metrics=measured,
                         serving_adapter=serving, serving_metrics=serving_metrics, baseline_metrics=baseline,
                         settings=self.settings.gate, backend=self.backend, retention=record.retention,
                         say=lambda line: self.say(f"  {line}"))
        record.preference = preference_diagnostics(out / RUN_EVAL) or None
        record.adapter, record.version, record.promoted = result.adapter, version, result.promoted
        record.gate, record.metrics, record.serving_version = result.reason, result.metrics, result.serving_version
        self.state.trained_tasks = sorted(set(self.state.trained_tasks) | set(record.tasks))
        if result.promoted:
            self.state.serving = {"adapter": result.adapter, "version": version, "metrics": result.metrics}
        return result
