"""The ML backend seen from the connector: its health, and reloads through its admin route.

Every wait on the backend retries transient failures (connection errors, timeouts, HTTP 5xx,
429, 408) until a deadline, and a failure says what it waited for and what it saw last: a
reload after hours of training must not be lost to one dropped connection.

A reload after a good training is recorded in the run directory (`pending_reload.json`, the
admin token left out) before it starts and removed once the backend serves the version; if
the reload fails, or the process dies, `illume-sync reload --run <run dir>` finishes it.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests

from illume.errors import IllumeError
from illume.layout import PENDING_RELOAD, PROMOTION_RECORD, ROUND_PREFIX
from illume.records import atomic_write_text

TRANSIENT = (408, 429, 500, 502, 503, 504)
MAX_BACKOFF_S = 10.0


@dataclass(frozen=True)
class BackendWait:
    deadline_s: float = field(default=600.0, metadata={
        "help": "How long to wait on the backend in all (a reload: until it serves the new version)."})
    request_s: float = field(default=30.0, metadata={"help": "Timeout of one request to the backend."})
    poll_s: float = field(default=0.5, metadata={
        "help": "Pause between two looks at the backend's state; the first backoff after a transient error "
                f"(doubling up to {MAX_BACKOFF_S:.0f} s)."})


class _Waiter:
    """Requests to one backend, each retried on transient failures until the shared deadline."""

    def __init__(self, backend_url: str, wait: BackendWait, headers: dict[str, str] | None = None) -> None:
        self.base, self.wait, self.headers = backend_url.rstrip("/"), wait, headers or {}
        self.started = time.monotonic()
        self.deadline = self.started + wait.deadline_s
        self.last = "no answer yet"

    def call(self, method: str, path: str, waiting_for: str, **kwargs: Any) -> requests.Response:
        backoff = self.wait.poll_s
        while True:
            timeout = max(0.1, min(self.wait.request_s, self.deadline - time.monotonic()))
            try:
                response = requests.request(method, self.base + path, headers=self.headers, timeout=timeout, **kwargs)
                if response.status_code not in TRANSIENT:
                    return response
                self.last = f"HTTP {response.status_code} to {method} {path}"
            except requests.RequestException as exc:
                self.last = f"{type(exc).__name__} on {method} {path}"
            self.pause(backoff, waiting_for)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    def pause(self, seconds: float, waiting_for: str) -> None:
        if time.monotonic() + seconds > self.deadline:
            raise IllumeError(f"waited {time.monotonic() - self.started:.0f} s for the ML backend at {self.base} "
                              f"{waiting_for}, in vain (last: {self.last})",
                              "Check that `illume-backend` is running and its log; GET /reload shows a reload's "
                              "state.")
        time.sleep(seconds)  # backing off, or polling the backend's state


def reload_backend(backend_url: str, admin_token: str, model: str, adapter: str | None, version: str | None,
                   wait: BackendWait = BackendWait()) -> dict[str, Any]:
    """POST /reload on the backend and wait until it serves the new version (or says why not).

    Safe to repeat: a backend already serving `version` is left alone, one already loading it
    is waited for, and one that lost the reload (restarted meanwhile) is asked again. Local
    paths go as absolute paths: the backend would resolve a relative one in its own working
    directory, not the caller's."""
    model, adapter = absolute_if_local(model), absolute_if_local(adapter)
    waiter = _Waiter(backend_url, wait, {"Authorization": f"Bearer {admin_token}"})
    goal = f"to serve {version or adapter or model!r}"
    asked = False
    while True:
        status = _json(waiter.call("GET", "/reload", goal), admin_token)
        state, serving = status.get("state"), status.get("serving_version")
        ours = status.get("model") == model and status.get("adapter") == adapter
        if state == "ready" and ((version is not None and serving == version) or (version is None and asked and ours)):
            return status
        if state == "failed" and asked and ours:
            raise IllumeError(f"The ML backend could not load the adapter: {status.get('error')}",
                              "The old model keeps serving; check the adapter and its base model.")
        if not (state == "loading" and ours):  # nothing of ours under way: ask (again)
            response = waiter.call("POST", "/reload", goal, json={"model": model, "adapter": adapter,
                                                                  "version": version})
            _refused(response, admin_token)
            asked = True  # accepted, or 409: a reload already running (ours, if an answer was lost)
        waiter.pause(wait.poll_s, goal)


def _refused(response: requests.Response, admin_token: str) -> None:
    if response.status_code in (401, 403):
        raise IllumeError(f"The ML backend refused the admin token (HTTP {response.status_code})",
                          "Pass --admin-token (ILLUME_ADMIN_TOKEN) as the backend was started with.")
    if response.status_code not in (200, 202, 409):  # 409: another reload is running; wait for it
        raise IllumeError(f"The ML backend refused the reload (HTTP {response.status_code}: {response.text[:300]})",
                          "Check the adapter directory and the backend's log.")


def _json(response: requests.Response, admin_token: str) -> dict[str, Any]:
    _refused(response, admin_token)
    try:
        status = response.json()
    except ValueError:
        status = None
    if not isinstance(status, dict):
        raise IllumeError(f"The ML backend answered GET /reload with no JSON object: {response.text[:200]!r}",
                          "Check that --backend-url names an `illume-backend`.")
    return status


def absolute_if_local(path: str | None) -> str | None:
    """A local file or directory as an absolute path; anything else (a hub id, None) as it is."""
    if path is None or not Path(path).expanduser().exists():
        return path
    return str(Path(path).expanduser().resolve())


def backend_health(backend_url: str) -> dict[str, Any]:
    """One look at GET /health for a status report (never raises)."""
    try:
        response = requests.get(backend_url.rstrip("/") + "/health", timeout=5)
        health = response.json() if response.status_code == 200 else {"status": f"HTTP {response.status_code}"}
    except (requests.RequestException, ValueError) as exc:
        return {"status": f"unreachable ({type(exc).__name__})"}
    return health if isinstance(health, dict) else {"status": "answered no JSON object: not an illume-backend?"}


@dataclass(frozen=True)
class PendingReload:
    """A reload a good training asked for that the backend has not confirmed yet."""

    backend_url: str
    model: str
    adapter: str | None
    version: str | None
    error: str | None = None


def reload_recorded(run_dir: Path, backend_url: str, admin_token: str, model: str, adapter: str | None,
                    version: str | None, wait: BackendWait = BackendWait()) -> dict[str, Any]:
    """reload_backend, recorded in `run_dir` until the backend serves the version."""
    pending = PendingReload(backend_url, absolute_if_local(model), absolute_if_local(adapter), version)
    path = Path(run_dir) / PENDING_RELOAD
    atomic_write_text(path, json.dumps(asdict(pending), indent=1))  # before: a killed process leaves it too
    try:
        status = reload_backend(backend_url, admin_token, model, adapter, version, wait)
    except IllumeError as exc:
        atomic_write_text(path, json.dumps(asdict(pending) | {"error": exc.what}, indent=1))
        raise IllumeError(exc.what, f"{exc.todo} The adapter is good: once the backend is fixed, run "
                                    f"`illume-sync reload --run {run_dir}` to serve it.") from exc
    _note_served(Path(run_dir), status.get("serving_version"))
    path.unlink(missing_ok=True)
    return status


def _note_served(run_dir: Path, version: str | None) -> None:
    """The run's promotion record says what the backend serves now that a (maybe late) reload is done."""
    record = run_dir / PROMOTION_RECORD
    try:
        promotion = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # no promotion recorded here (`illume-sync reload` of a hand-made run): nothing to say
    if isinstance(promotion, dict) and promotion.get("serving_version") != version:
        atomic_write_text(record, json.dumps(promotion | {"serving_version": version}, indent=1, sort_keys=True))


def pending_reload(run_dir: Path) -> PendingReload | None:
    """The reload recorded in `run_dir`, or None."""
    path = Path(run_dir) / PENDING_RELOAD
    if not path.is_file():
        return None
    try:
        return PendingReload(**json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise IllumeError(f"{path} is not a pending-reload record ({exc})",
                          "Delete it and run `illume-sync reload` with --model/--adapter.") from None


def finish_pending_reload(run_dir: Path, admin_token: str, backend_url: str | None = None,
                          wait: BackendWait = BackendWait()) -> dict[str, Any]:
    """Do the reload recorded in `run_dir` (at `backend_url` when given, else where recorded)."""
    pending = pending_reload(run_dir)
    if pending is None:
        raise IllumeError(f"{run_dir} holds no {PENDING_RELOAD}: no reload is pending there",
                          "Pass the run directory of the training whose reload failed, or --model/--adapter.")
    return reload_recorded(run_dir, backend_url or pending.backend_url, admin_token, pending.model, pending.adapter,
                           pending.version, wait)


def finish_earlier_reloads(run_dir: Path, backend_url: str, admin_token: str, say=lambda _: None,
                           wait: BackendWait = BackendWait()) -> dict[str, Any] | None:
    """The next round's part: finish the newest reload an earlier round of the same run left
    pending (`<run>/round-N/` or `<run>/round-N/<step>/`, as the loop and `round` lay them out);
    older ones it supersedes are dropped. A failure is said, not raised: this round's own reload
    follows and reports."""
    here = Path(run_dir).resolve()
    rounds = next((p.parent for p in (here, *here.parents) if p.name.startswith(ROUND_PREFIX)), None)
    if rounds is None:
        return None
    found = {p for p in (*rounds.glob(f"{ROUND_PREFIX}*/{PENDING_RELOAD}"), *rounds.glob(f"{ROUND_PREFIX}*/*/{PENDING_RELOAD}"))
             if p.parent != here}
    if not found:
        return None
    newest, *older = sorted(found, key=lambda p: (p.stat().st_mtime_ns, str(p)), reverse=True)
    for path in older:
        say(f"dropping {path}: a newer pending reload ({newest}) supersedes it")
        path.unlink(missing_ok=True)
    say(f"finishing the reload an earlier round left pending ({newest})")
    try:
        return finish_pending_reload(newest.parent, admin_token, backend_url, wait)
    except IllumeError as exc:
        say(f"the pending reload failed again: {exc.what}")
        return None
