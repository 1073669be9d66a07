"""The ILLUME loop, round after round: import -> predict -> annotate -> export -> train -> reload.

Each round gets its own tasks (the same items, fresh candidates from the newest model), so
annotations always stay attached to the candidates they judged. The export, train and
gate/promote steps are the round step every path that trains shares (connector.round_step):
progress is recorded in `<run>/rounds.json` after every step (atomically), so an interrupted
loop continues where it stopped: finished steps are skipped and an interrupted training run
resumes from its last DeepSpeed checkpoint.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from collections import Counter
from typing import Any, Callable, Iterable

from illume.labelstudio.client import LabelStudioClient
from illume.labelstudio.task import task_round
from connector.annotator_quality import QualitySettings
from connector.importing import ImagePlacer, import_items, read_items
from connector.predicting import predict_missing
from connector.project import REQUEUE_FOR_ME, get_project, overlap, required_annotations
from connector.simulate import simulate
from connector.promotion import Backend
from connector.round_step import (EXPORTED, TRAINED, VERSION_PREFIX, RoundRecord, RoundStep, RunState,
                                  TrainingSettings, exclusive)
from illume.critic import DEFAULT_CRITIC, DEFAULT_SCORING, make_critic
from illume.errors import IllumeError
from illume.metrics import scored_as

STEPS = ("import", "predict", "annotate", EXPORTED, TRAINED)


@dataclass
class LoopConfig:
    project: dict  # the Label Studio project (from find_project)
    items: Path  # items that receive feedback each round
    run_dir: Path
    base_model: str
    rounds: int = 2
    eval_items: Path | None = None  # held-out Item JSONL: metrics per round and the promotion gate
    local_files_root: Path | None = None
    simulate: bool = True  # False: wait for people to annotate in Label Studio
    annotators: int = 1
    per_task: int | None = None  # simulated: each task judged by this many of the annotators (None: all)
    critic: str = DEFAULT_CRITIC  # who ticks when simulating (illume.critic.make_critic)
    threshold: float | None = None  # the critic's acceptance threshold (None: its own)
    # the critic's ROUGE-L tokens and the summary's metrics (illume.critic.SCORINGS); evaluations record
    # both modes, and the gate compares the default mode's figures
    scoring: str = DEFAULT_SCORING
    error_rate: float | tuple[float, ...] = 0.0  # one per simulated annotator, or one for all
    seed: int = 0
    min_agreement: int | None = None
    min_annotations: int | None = None  # a task is complete with this many annotations (None: the project's overlap)
    backend_url: str | None = None
    admin_token: str | None = None
    training: TrainingSettings = field(default_factory=TrainingSettings)  # train, gate, retention (round_step)
    predict_batch: int = 16
    poll_seconds: float = 5.0
    wait_hours: float = 24.0  # --wait-for-people: a round goes on with what is complete after this long
    annotate_hint: str = ""  # said with the labeling address once a round's tasks can be labelled (e.g. a login)
    version_prefix: str = VERSION_PREFIX
    quality: QualitySettings | None = None  # annotator quality: scored in the manifest; its min_quality leaves people out


class Loop:
    """Runs the rounds of one loop configuration; `say` receives one line per event."""

    def __init__(self, client: LabelStudioClient, config: LoopConfig, say: Callable[[str], None] = print,
                 progress: Callable[[str], Callable[[int], None]] | None = None) -> None:
        self.client, self.config, self.say = client, config, say
        self.progress = progress or (lambda label: (lambda amount=1: None))
        required_annotations(config.project, config.min_annotations)  # bad options fail now
        # bad options fail now, not after the first round's work
        self.critic = make_critic(config.critic, config.threshold, config.scoring)
        self.step = RoundStep(config.run_dir, config.base_model, config.training, config.eval_items,
                              Backend.from_options(config.backend_url, config.admin_token), say,
                              version_prefix=config.version_prefix)
        config.run_dir = self.step.run_dir  # absolute: adapters are handed to the backend by it
        self.items = list(read_items(config.items))

    @property
    def state(self) -> RunState:
        return self.step.state

    # ------------------------------------------------------------------ the rounds
    def run(self) -> RunState:
        with exclusive(self.config.run_dir):
            self.step.state = RunState.load(self.config.run_dir)  # as the lock's holder left it
            self.state.serving.setdefault("adapter", None)
            self.state.serving.setdefault("version", None)
            self.step.measure_references()  # round 0: the model as built
            for number in range(1, self.config.rounds + 1):
                self._round(number)
        return self.state

    def _round(self, number: int) -> None:
        record = self.state.round(number)
        for step in STEPS:
            if step in record.done:
                continue
            self.say(f"round {number}: {step}")
            started = time.monotonic()
            getattr(self, f"_{step}")(number, record)
            record.seconds[step] = round(time.monotonic() - started, 1)
            record.done.append(step)
            self.step.save()

    # ------------------------------------------------------------------ steps
    def _import(self, number: int, record: RoundRecord) -> None:
        placer = ImagePlacer(self.client, self.config.project["id"], self.config.local_files_root,
                             self.config.items if self.config.items.is_dir() else self.config.items.parent)
        result = import_items(self.client, self.config.project["id"], self.items, placer,
                              self.progress("imported"), round_=number)
        record.imported = result.imported + result.skipped
        self.say(f"  {result.imported} tasks imported ({result.skipped} already there)")

    def _predict(self, number: int, record: RoundRecord) -> None:
        result = predict_missing(self.client, self.config.project, self.config.predict_batch, self.progress("predicted"))
        record.sampled_by = result.version
        record.predictions_by_version = self._prediction_versions(number)
        self.say(f"  {result.predicted} of {result.requested} tasks got candidates from {result.version!r}")
        if result.predicted < result.requested:
            raise IllumeError(f"{result.requested - result.predicted} tasks of round {number} got no candidates",
                              "Check the ML backend's log, then run the loop again (it resumes here).")

    def _round_tasks(self, number: int):
        for task in self.client.pages("/api/tasks", {"project": self.config.project["id"], "fields": "all"},
                                      page_size=500):
            if task_round(task.get("data") or {}) == number:
                yield task

    def _prediction_versions(self, number: int) -> dict[str, int]:
        """How many of this round's tasks carry a prediction of each model version."""
        counts: dict[str, int] = {}
        for task in self._round_tasks(number):
            for version in {str(p.get("model_version")) for p in task.get("predictions") or []}:
                counts[version] = counts.get(version, 0) + 1
        return counts

    def _annotate(self, number: int, record: RoundRecord) -> None:
        if self.config.simulate:
            result = simulate(self.client, self.config.project, self.config.annotators, self.critic,
                              self.config.error_rate, self.config.seed + 1000 * number, self.progress("annotated"),
                              self.config.per_task)
            self.say(f"  simulated annotators ticked {result.ticked} of {result.shown} candidates")
            return
        record.waiting = self._wait_for_people(number)
        record.skipped_tasks = record.waiting["skipped"]

    def _wait_for_people(self, number: int) -> dict[str, Any]:
        """Until every round-`number` task is finished as Label Studio sees it (RoundProgress), or the
        wait runs out; what was finished then."""
        project = get_project(self.client, self.config.project["id"])  # its skip setting as it is now
        required = required_annotations(project, self.config.min_annotations)
        self.say(f"  round {number}'s tasks can be labelled: open {self.client.url}/projects/{project['id']}/data "
                 f"and press \"Label All Tasks\" (lowest model score first){self.config.annotate_hint}\n"
                 f"  each task needs {required} annotation(s) (overlap {overlap(project)}); a skipped task is "
                 f"finished once the people it was offered to skipped it; Ctrl-C stops, the loop resumes here")
        hours = self.config.wait_hours
        deadline = time.monotonic() + hours * 3600
        shown = None
        while True:
            progress = RoundProgress.of(self._round_tasks(number), overlap(project), required,
                                        project.get("skip_queue") != REQUEUE_FOR_ME)
            if progress != shown:
                self.say(f"  round {number}: {progress.finished}/{progress.tasks} tasks finished "
                         f"({progress.complete} complete, {progress.skipped} skipped)")
                shown = progress
            timed_out = time.monotonic() > deadline
            if (progress.tasks and progress.finished >= progress.tasks) or timed_out:
                if timed_out:
                    self.say(f"  round {number}: stopped waiting after {hours} h; going on with the "
                             f"{progress.complete} complete tasks")
                return {**asdict(progress), "required_annotations": required, "timed_out": timed_out}
            time.sleep(self.config.poll_seconds)  # waiting on people, not on a race

    def _export(self, number: int, record: RoundRecord) -> None:
        self.step.export(self.client, self.config.project, record, only_round=True,
                         min_agreement=self.config.min_agreement, min_annotations=self.config.min_annotations,
                         people=not self.config.simulate, seed=self.config.seed, progress=self.progress("exported"),
                         quality=self.config.quality)

    def _train(self, number: int, record: RoundRecord) -> None:
        self.step.train(record)


@dataclass(frozen=True)
class RoundProgress:
    """Where a round's tasks stand, as Label Studio sees them.

    A task is finished when it is complete (at least `required` annotations, skips not counted)
    or when it will not be offered again: each of the `overlap` people Label Studio offers it to
    annotated or skipped it (the default skip setting requeues a skipped task for others only,
    so a lone annotator's skip is final; under "Requeue for me" a skip settles nothing).
    """

    tasks: int = 0
    finished: int = 0
    complete: int = 0
    skipped: int = 0  # tasks somebody skipped (never training data; export leaves skips out)

    @classmethod
    def of(cls, tasks: Iterable[dict], overlap: int, required: int, skips_settle: bool) -> "RoundProgress":
        counts = Counter()
        for task in tasks:
            annotated = int(task.get("total_annotations") or 0)  # Label Studio's count leaves skips out
            skips = int(task.get("cancelled_annotations") or 0)
            complete = annotated >= required
            counts.update(tasks=1, complete=int(complete), skipped=int(skips > 0),
                          finished=int(complete or (skips_settle and skips > 0 and annotated + skips >= overlap)))
        return cls(**counts)


def summary_table(rounds: dict[str, dict], scoring: str = DEFAULT_SCORING) -> str:
    """One line per round: acceptance (%), items with an accepted rationale, rows, held-out
    metrics (0-100, as illume.metrics reports them in `scoring`), promotion. Round 0 is the model as built."""
    header = f"{'round':>5} {'accept%':>8} {'items+':>7} {'rows':>5} {'ROUGE-L':>8} {'CIDEr':>6} {'acc':>6}  version"
    lines = [header, "-" * len(header)]
    for key in sorted(rounds, key=int):
        record = rounds[key]
        rate = (record.get("acceptance") or {}).get("rate")
        metrics = scored_as(record.get("metrics") or {}, scoring)
        counts = record.get("counts") or {}

        def fmt(value, scale=100.0, width=6):
            return f"{value * scale:{width}.1f}" if isinstance(value, (int, float)) else f"{'-':>{width}}"

        items = f"{record.get('items_with_accepted', '-')}/{record.get('items_judged', '-')}" if key != "0" else "-"
        lines.append(f"{key:>5} {fmt(rate, width=8)} {items:>7} {counts.get('rationale_rows', '-'):>5} "
                     f"{fmt(metrics.get('rouge_l'), 1, 8)} {fmt(metrics.get('cider'), 1)} {fmt(metrics.get('accuracy'), 1)}"
                     f"  {record.get('version') or '-'}{'' if record.get('promoted', True) else ' (not promoted)'}")
    return "\n".join(lines)
