"""The embedded default, end to end on one machine: `illume-sync demo`.

Builds (or reuses) the Shapes-X data and the demo model, starts a local Label Studio and the
ML backend, runs the ILLUME loop with simulated annotators (or waits for people with
--interactive), writes the report, prints a summary, and stops every process it started.
Running it again with the same --run-dir resumes an interrupted run, on the same ports (so the
address people bookmarked keeps working). SIGTERM stops it like Ctrl-C: everything it started
is stopped.
"""
from __future__ import annotations

import json
import os
import socket
import secrets
import signal
import subprocess
import sys
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import requests

from connector.local_label_studio import LocalLabelStudio, stop_process_group, wait_until_healthy
from connector.promotion import GateSettings
from connector.retention import Retention
from illume.critic import DEFAULT_CRITIC
from illume.ports import free_port
from illume.demo_model import DEMO_SAMPLING, DEMO_TRAINING

PROJECT_TITLE = "ILLUME demo (Shapes-X)"
BACKEND_TITLE = "illume"


@dataclass
class DemoConfig:
    run_dir: Path
    rounds: int = 2
    feedback_items: int = 200
    eval_items: int = 100
    interactive: bool = False
    seed: int = 0
    annotators: int = 1
    critic: str = DEFAULT_CRITIC
    threshold: float | None = None  # None: the critic's own
    error_rate: float | tuple[float, ...] = 0.0  # one for all, or one per annotator
    per_task: int | None = None  # each task judged by this many of the annotators (None: all)
    model_cache: Path | None = None
    model: Path | None = None  # serve and train this model instead of the demo model (tests)
    gate: GateSettings = field(default_factory=GateSettings)  # the promotion gate, as `loop` has it by default
    retention: Retention = field(default_factory=Retention)  # how rounds keep answers, as `loop` has it by default
    train_args: tuple[str, ...] = tuple(arg for key, value in DEMO_TRAINING.items()
                                        for arg in (f"--{key.replace('_', '-')}", str(value)))


def prepare_data(config: DemoConfig, say: Callable[[str], None]) -> tuple[Path, Path]:
    """Shapes-X feedback and held-out items under <run>/data (once)."""
    from illume.datasets import shapes

    data = config.run_dir / "data"
    feedback, test = data / "feedback.jsonl", data / "test.jsonl"
    marker = data / "sizes.json"
    sizes = {"feedback": config.feedback_items, "test": config.eval_items}
    if not (marker.is_file() and json.loads(marker.read_text()) == {**sizes, "seed": config.seed}):
        say(f"writing Shapes-X: {config.feedback_items} feedback items, {config.eval_items} held-out items")
        shapes.generate(data, seed=config.seed, sizes=sizes)
        marker.write_text(json.dumps({**sizes, "seed": config.seed}))
    return feedback, test


def credentials(run_dir: Path) -> dict[str, str]:
    """The local Label Studio's admin token and the backend's admin token, kept across runs."""
    path = run_dir / "credentials.json"
    if path.is_file():
        return json.loads(path.read_text())
    values = {"label_studio_token": secrets.token_hex(20), "admin_token": secrets.token_urlsafe(24)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(values))
    path.chmod(0o600)
    return values


def kept_ports(run_dir: Path, names: tuple[str, ...], say: Callable[[str], None]) -> dict[str, int]:
    """One port per name, the same as the previous run's (run_dir/ports.json) while it is free; a
    port taken by something else meanwhile is replaced, and said so."""
    path = run_dir / "ports.json"
    before = json.loads(path.read_text()) if path.is_file() else {}
    ports = {}
    for name in names:
        port = before.get(name)
        if port is not None and not port_is_free(port):
            say(f"port {port} ({name}) is taken now: using another one")
            port = None
        ports[name] = port or free_port()
    path.write_text(json.dumps(ports))
    return ports


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", int(port)))
        except OSError:
            return False
        return True


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt in the main thread, so it unwinds (stopping every process
    started) exactly as Ctrl-C does."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def ml_backend(model: Path, adapter: str | None, version: str | None, label_studio: LocalLabelStudio,
               admin_token: str, allowed_root: Path, log: Path, timeout: float = 300.0,
               port: int | None = None) -> Iterator[str]:
    """`illume-backend` in a subprocess on 127.0.0.1 (`port`, or a free one); yields its URL, stops it on exit."""
    port = port or free_port()
    command = [sys.executable, "-m", "ml_backend.server", "--model", str(model), "--host", "127.0.0.1",
               "--port", str(port), "--admin-token", admin_token, "--allowed-roots", str(allowed_root),
               "--label-studio-url", label_studio.url, "--label-studio-api-key", label_studio.token]
    command += [arg for key, value in DEMO_SAMPLING.items() for arg in (f"--{key.replace('_', '-')}", str(value))]
    if adapter:
        command += ["--adapter", adapter] + (["--model-version", version] if version else [])
    with open(log, "ab") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
                                   env=dict(os.environ))
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return requests.get(f"{url}/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_until_healthy(process, healthy, "the ML backend", log, timeout)
        yield url
    finally:
        stop_process_group(process)


def run_demo(config: DemoConfig, say: Callable[[str], None] = print,
             progress: Callable[[str], Callable[[int], None]] | None = None) -> dict:
    """Run the whole demo; returns the rounds (rounds.json's records, with their figures) and the report."""
    with stop_on_sigterm():
        return _run_demo(config, say, progress)


def _run_demo(config: DemoConfig, say: Callable[[str], None],
              progress: Callable[[str], Callable[[int], None]] | None) -> dict:
    from illume.labelstudio.client import connect
    from connector.loop import Loop, LoopConfig, summary_table
    from connector.round_step import RunState, TrainingSettings
    from connector.project import init_project, read_label_config
    from connector.report import write_report
    from illume.demo_model import ensure_demo_model

    started = time.monotonic()
    run_dir = config.run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    feedback, test = prepare_data(config, say)
    if config.model is None:
        model = ensure_demo_model(config.model_cache, seed=config.seed, progress=say)
    else:
        model = Path(config.model)
    say(f"model: {model}")
    secrets_ = credentials(run_dir)
    serving = RunState.load(run_dir / "loop").serving  # a resumed run keeps serving its newest adapter

    ports = kept_ports(run_dir, ("label_studio", "backend"), say)
    with ExitStack() as stack:
        label_studio = LocalLabelStudio(run_dir / "label-studio", port=ports["label_studio"],
                                        token=secrets_["label_studio_token"], files_root=run_dir)
        say(f"starting Label Studio on port {label_studio.port} (the first start migrates its database, ~1 min)")
        stack.enter_context(label_studio)
        say("starting the ML backend")
        backend_url = stack.enter_context(ml_backend(model, serving.get("adapter"), serving.get("version"),
                                                     label_studio, secrets_["admin_token"], run_dir,
                                                     run_dir / "backend.log", port=ports["backend"]))
        client = connect(label_studio.url, label_studio.token)
        result = init_project(client, PROJECT_TITLE, read_label_config(None), 1, backend_url, BACKEND_TITLE, None)
        if config.interactive:  # the address comes once tasks can be labelled, not while the page says "Import"
            say(f"preparing the round: importing {config.feedback_items} items and sampling their candidates "
                "(a few minutes); the address to annotate at follows once tasks can be labelled")
        loop = Loop(client, LoopConfig(
            project=result.project, items=feedback, run_dir=run_dir / "loop", base_model=str(model),
            rounds=config.rounds, eval_items=test, local_files_root=run_dir, simulate=not config.interactive,
            annotators=config.annotators, critic=config.critic, threshold=config.threshold,
            error_rate=config.error_rate, per_task=config.per_task,
            seed=config.seed, backend_url=backend_url, admin_token=secrets_["admin_token"],
            training=TrainingSettings(train_args=tuple(config.train_args), gate=config.gate,
                                      retention=config.retention),
            annotate_hint=f"\n  login: {label_studio.username}  password: {label_studio.password}"),
            say=say, progress=progress)
        rounds = loop.run().rounds_json()
        report = write_report(run_dir / "loop", run_dir / "report")
    say(f"\nreport: {report}")
    say(summary_table(rounds))
    say(f"wall time: {time.monotonic() - started:.0f} s")
    return {"rounds": rounds, "report": str(report), "seconds": round(time.monotonic() - started, 1)}

