"""START_TRAINING from Label Studio ("Start training"): hand off to the configured command,
never block on it.

The command (ILLUME_TRAIN_COMMAND / --train-command) is normally one labeling round:

    illume-sync round --project {project} --run-dir runs/vqa --base-model MODEL \
        --eval-items heldout.jsonl --backend-url http://backend:9090

`{project}` is replaced by the project id from the webhook payload (normalised: "011" is
project 11). The command runs in the background in its own process group, with
LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY (the backend's own Label Studio settings),
ILLUME_ADMIN_TOKEN (so the round can reload this backend), ILLUME_PROJECT / ILLUME_PROJECT_ID
and ILLUME_WEBHOOK_PAYLOAD (a JSON file with the payload, removed when the run ends) in its
environment; its output goes to ILLUME_TRAIN_LOG (default illume-train.log in the working
directory).

At most one run per project, and at most `max_runs` at once. Every press is answered with a
sentence for the lead: started as round N, already running since ..., nothing new to train on,
or why it could not start. A thread per run waits for its process (so none is left a zombie),
then removes its payload file and records the exit code for GET /training. Before a run starts,
torch-extension build locks left by killed runs are removed and reported (illume.stale_locks).
"""
from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable, Mapping

from illume.errors import IllumeError
from illume.options import option
from illume.stale_locks import clear_stale_locks

log = logging.getLogger(__name__)
EXAMPLE = "illume-sync round --project {project} --run-dir runs/P --base-model MODEL --backend-url URL"
# What `illume-sync round` prints first ("round 3: exporting completed tasks of project 11 ..."):
# naming the project keeps runs of several projects apart in the one log.
ROUND_LINE = rb"^round ([0-9]+):[^\n]* of project %s\b"
LOG_TAIL_CHARS = 2000
# The log is shared by all runs and grows without bound, and a press polls it every 0.1 s: only
# these bytes are read, from the end (the tail; UTF-8 takes at most 4 bytes a character) and
# from the run's start (where its round line is).
LOG_TAIL_BYTES = 4 * LOG_TAIL_CHARS
ROUND_LINE_BYTES = 65536
PRESSES_KEPT = 20  # GET /training lists the answers to the latest presses
ANSWER_WAIT_S = 10.0  # how long a press waits for its run to name its round (the backend's default)


def max_runs_option():
    """Training runs at once: a setting of the backend and of the trainer service, declared here once."""
    return option(1, "Training runs at once (all projects); a press beyond it is answered with the runs in the way.",
                  env="ILLUME_MAX_TRAINING_RUNS", min=1)


def project_id(payload: dict[str, Any]) -> str:
    """The payload's project id, normalised ("011" -> "11"), when it is one (ASCII digits, at
    most 18), else ""."""
    project = payload.get("project")
    if isinstance(project, dict):
        project = project.get("id")
    if isinstance(project, bool) or not isinstance(project, (int, str)):
        return ""
    project = str(project).strip()
    return str(int(project)) if project.isascii() and project.isdigit() and len(project) <= 18 else ""


def training_argv(command: str, project: str) -> list[str]:
    """The command's arguments with `{project}` filled in (only a numeric project id is accepted)."""
    if "{project}" in command and not project:
        raise IllumeError("Label Studio's START_TRAINING names no usable project (a numeric id)",
                          "Press 'Start training' in the project's Model settings.")
    try:
        return [part.replace("{project}", project) for part in shlex.split(command)]
    except ValueError as exc:  # unbalanced quotes
        raise IllumeError(f"the training command cannot be split into arguments ({exc})",
                          "Fix the quoting of --train-command (ILLUME_TRAIN_COMMAND).") from exc


def _clock(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


@dataclass(eq=False)
class TrainingRun:
    project: str
    process: subprocess.Popen
    log_path: Path
    log_offset: int  # where this run's output starts in the (shared, appended) log
    payload_dir: Path
    started_at: float = field(default_factory=time.time)
    fingerprint: Hashable | None = None  # the project's annotation counts when it started
    round: int | None = None
    exit_code: int | None = None
    ended_at: float | None = None
    ended: threading.Event = field(default_factory=threading.Event)

    def head(self) -> bytes:
        """The first ROUND_LINE_BYTES of this run's output."""
        return self._read(ROUND_LINE_BYTES)

    def tail(self) -> str:
        """The last LOG_TAIL_CHARS characters of this run's output (its output only: the log is shared)."""
        data = self._read(LOG_TAIL_BYTES, from_end=True)
        return data.decode("utf-8", "replace")[-LOG_TAIL_CHARS:]  # "replace": the seek may cut a character

    def _read(self, limit: int, from_end: bool = False) -> bytes:
        """At most `limit` bytes of this run's output: its first, or with from_end its last."""
        try:
            with open(self.log_path, "rb") as handle:
                start = self.log_offset
                if from_end:
                    start = max(start, os.fstat(handle.fileno()).st_size - limit)
                handle.seek(start)
                return handle.read(limit)
        except OSError:
            return b""

    def find_round(self) -> int | None:
        pattern = ROUND_LINE % (re.escape(self.project.encode()) if self.project else rb"[0-9]+")
        if self.round is None and (match := re.search(pattern, self.head(), re.MULTILINE)):
            self.round = int(match.group(1))
        return self.round

    @property
    def name(self) -> str:
        return f"round {self.round}" if self.round is not None else f"process {self.process.pid}"

    def describe(self) -> dict[str, Any]:
        self.find_round()
        return {"project": self.project, "round": self.round, "pid": self.process.pid,
                "started_at": _clock(self.started_at), "running": self.exit_code is None,
                "exit_code": self.exit_code, "ended_at": _clock(self.ended_at) if self.ended_at else None,
                "log": str(self.log_path),
                "log_tail": self.tail()}


@dataclass(frozen=True)
class Answer:
    status: str  # started | already running | busy | nothing new | not started | failed
    message: str
    run: TrainingRun | None = None


class TrainingRuns:
    """The runs "Start training" started: one per project, at most `max_runs` at once.

    `fingerprint(project)`: something that changes when the project gets new annotations (None:
    unknown). A press after a run that succeeded is answered "nothing new" while it is unchanged.
    """

    def __init__(self, max_runs: int, answer_wait_s: float = ANSWER_WAIT_S,
                 fingerprint: Callable[[str], Hashable | None] = lambda _project: None) -> None:
        self.max_runs = max_runs
        self.answer_wait_s = answer_wait_s
        self.fingerprint = fingerprint
        self._runs: dict[str, TrainingRun] = {}  # the latest run of each project
        self._presses: deque[dict[str, Any]] = deque(maxlen=PRESSES_KEPT)  # what each press was answered
        self._lock = threading.Lock()

    def running(self) -> list[TrainingRun]:
        return [run for run in self._runs.values() if run.exit_code is None]

    def status(self) -> dict[str, Any]:
        with self._lock:
            runs = sorted(self._runs.values(), key=lambda run: run.started_at)
        return {"max_runs": self.max_runs, "running": [run.describe() for run in runs if run.exit_code is None],
                "last": runs[-1].describe() if runs else None,
                "projects": {run.project: run.describe() for run in runs}, "presses": list(self._presses)}

    def start(self, command: str | None, payload: dict[str, Any],
              env: Mapping[str, str | None] | None = None) -> Answer:
        """Start a run unless one is refused; the answer says which, in a sentence for the lead."""
        answer = self._start(command, payload, env)
        self._presses.append({"at": _clock(time.time()), "project": project_id(payload) or None,
                              "status": answer.status, "message": answer.message})
        return answer

    def _start(self, command: str | None, payload: dict[str, Any], env: Mapping[str, str | None] | None) -> Answer:
        project = project_id(payload)
        label = f"project {project}" if project else "this backend"
        fingerprint = self.fingerprint(project) if project else None
        with self._lock:
            earlier = self._runs.get(project)
            if earlier is not None and earlier.exit_code is None:
                earlier.find_round()
                return Answer("already running", f"Training for {label} is already running since "
                              f"{_clock(earlier.started_at)} ({earlier.name}); "
                              f"its log is {earlier.log_path}. Press again once it has finished.", earlier)
            running = self.running()
            if len(running) >= self.max_runs:
                others = ", ".join(f"project {run.project or '?'} since {_clock(run.started_at)}" for run in running)
                return Answer("busy", f"Not started: {len(running)} training run(s) at once is this backend's limit "
                              f"(--max-training-runs) and it is reached ({others}). Press again when one has "
                              "finished.")
            if (earlier is not None and earlier.exit_code == 0 and fingerprint is not None
                    and fingerprint == earlier.fingerprint):
                return Answer("nothing new", f"Nothing new to train on: {label} has had no new annotations since "
                              f"{earlier.name} started at {_clock(earlier.started_at)} (it finished at "
                              f"{_clock(earlier.ended_at or earlier.started_at)}).", earlier)
            stale = clear_stale_locks()  # a killed run's build lock would hold this run forever
            try:
                run = start_training(command, payload, env, project)
            except IllumeError as exc:
                log.warning("training for %s not started: %s", label, exc)
                return Answer("not started", f"Not started: {exc}")
            run.fingerprint = fingerprint
            self._runs[project] = run
            threading.Thread(target=self._reap, args=(run,), name=f"illume-train-{run.process.pid}",
                             daemon=True).start()
        answer = self._first_news(run, label)
        return Answer(answer.status, " ".join([answer.message, *(f"Before it: {note}." for note in stale)]), answer.run)

    def _first_news(self, run: TrainingRun, label: str) -> Answer:
        """Wait a little for the run to say its round (or to end at once): the answer names it."""
        deadline = time.monotonic() + self.answer_wait_s
        while run.find_round() is None and not run.ended.wait(min(0.1, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                break
        if run.ended.is_set() and run.exit_code != 0:
            tail = run.tail().strip().splitlines()[-1:] or ["(no output)"]
            return Answer("failed", f"Training for {label} ended at once with exit code {run.exit_code}: "
                          f"{tail[0][:300]} (log: {run.log_path}).", run)
        if run.round is not None:
            return Answer("started", f"Training for {label} started as round {run.round} (process "
                          f"{run.process.pid}, log {run.log_path}); GET /training shows how it ends.", run)
        return Answer("started", f"Training for {label} started as process {run.process.pid} (log "
                      f"{run.log_path}); GET /training shows its round and how it ends.", run)

    def _reap(self, run: TrainingRun) -> None:
        run.exit_code = run.process.wait()  # reaps it: no zombie
        run.ended_at = time.time()
        shutil.rmtree(run.payload_dir, ignore_errors=True)
        run.find_round()
        log.log(logging.INFO if run.exit_code == 0 else logging.WARNING,
                "training for project %s (%s) ended with exit code %d; log %s", run.project or "?", run.name,
                run.exit_code, run.log_path)
        run.ended.set()

    def wait(self, timeout: float) -> bool:
        """Block until no run is running (shutdown, tests); True when none is left."""
        deadline = time.monotonic() + timeout
        for run in list(self._runs.values()):
            if not run.ended.wait(max(0.0, deadline - time.monotonic())):
                return False
        return True


def start_training(command: str | None, payload: dict[str, Any], env: Mapping[str, str | None] | None,
                   project: str) -> TrainingRun:
    """Start the training command in the background. `env`: extra variables for it (unset ones
    are left out). A command that cannot start raises IllumeError with the reason and leaves
    nothing behind."""
    if not command:
        raise IllumeError("Label Studio asked to start training, but no training command is configured",
                          f"Start the backend with --train-command (ILLUME_TRAIN_COMMAND), e.g. '{EXAMPLE}'.")
    argv = training_argv(command, project)
    if not argv:
        raise IllumeError("the training command is empty", f"Set --train-command, e.g. '{EXAMPLE}'.")
    payload_dir = Path(tempfile.mkdtemp(prefix="illume-webhook-"))
    try:
        payload_path = payload_dir / "payload.json"
        payload_path.write_text(json.dumps(payload), encoding="utf-8")
        extra = {key: value for key, value in (env or {}).items() if value}
        child_env = dict(os.environ, **extra, ILLUME_WEBHOOK_PAYLOAD=str(payload_path), ILLUME_PROJECT_ID=project)
        if project:
            child_env["ILLUME_PROJECT"] = project
        log_path = Path(os.environ.get("ILLUME_TRAIN_LOG", "illume-train.log")).resolve()
        with open(log_path, "ab") as output:
            offset = output.tell()
            process = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT, env=child_env,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
    except OSError as exc:  # no such program, not executable, log not writable
        shutil.rmtree(payload_dir, ignore_errors=True)
        raise IllumeError(f"the training command {argv[0]!r} could not be started ({exc.strerror or exc})",
                          "Check --train-command (ILLUME_TRAIN_COMMAND): the program must exist on the backend's "
                          "PATH and be executable, and ILLUME_TRAIN_LOG writable.") from exc
    log.info("training started: pid %d, command %r, log %s", process.pid, argv, log_path)
    return TrainingRun(project, process, log_path, offset, payload_dir)
