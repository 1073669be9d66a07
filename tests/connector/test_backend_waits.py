"""Waits on the real backend (over HTTP, behind a fault proxy): transient errors are retried
until a deadline, a failure says what it waited for, and a failed reload after a good training
is recorded so that `illume-sync reload --run` finishes it."""
from __future__ import annotations

import json
from collections import Counter

import pytest
from click.testing import CliRunner

from connector.backend_client import BackendWait, finish_earlier_reloads, reload_backend, reload_recorded
from connector.cli import main
from fault_proxy import Fault, FaultProxy
from illume.errors import IllumeError
from illume.layout import PENDING_RELOAD, PROMOTION_RECORD
from illume.ports import free_port
from ml_backend.app import create_app
from ml_backend.settings import Settings
from tests.backend.backend_helpers import FAST_SAMPLING, ServerThread

ADMIN = "adm1n"
QUICK = BackendWait(deadline_s=3.0, request_s=1.0, poll_s=0.1)


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    model = str(tiny_model_dir("llava"))
    with ServerThread(create_app(Settings(model=model, device="cpu", admin_token=ADMIN, sampling=FAST_SAMPLING))) as server:
        yield server.url, model


def serving(url: str) -> str:
    import requests

    return requests.get(f"{url}/reload", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10).json()["serving_version"]


def test_a_reload_rides_out_502s_and_dropped_answers(backend):
    url, model = backend
    proxy = FaultProxy(url)
    try:
        proxy.add(Fault("POST", "/reload", "drop"))  # the backend starts loading, we hear nothing
        proxy.add(Fault("GET", "/reload", "502", times=2))
        proxy.add(Fault("GET", "/reload", "drop", times=1))
        status = reload_backend(proxy.url, ADMIN, model, None, "waits-v2")
        assert status["serving_version"] == "waits-v2" and status["state"] == "ready"
        assert proxy.injected == Counter({"502": 2, "drop": 2})
        assert proxy.requests[("POST", "/reload")] == 2  # the dropped one, retried once
        again = reload_backend(proxy.url, ADMIN, model, None, "waits-v2")  # already served: nothing to do
        assert again["serving_version"] == "waits-v2" and proxy.requests[("POST", "/reload")] == 2
    finally:
        proxy.stop()


def test_a_wait_that_runs_out_says_what_it_waited_for():
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(IllumeError, match=r"waited \d+ s for the ML backend .* to serve 'v9', in vain \(last: "
                                          r"ConnectionError on GET /reload\)"):
        reload_backend(dead, ADMIN, "/nowhere/model", None, "v9", QUICK)


def test_a_failed_reload_is_recorded_and_finished_by_illume_sync_reload(backend, tmp_path):
    url, model = backend
    dead = f"http://127.0.0.1:{free_port()}"
    (tmp_path / PROMOTION_RECORD).write_text(json.dumps({"version": "waits-v3", "promoted": True,
                                                          "serving_version": None}))
    with pytest.raises(IllumeError, match=r"illume-sync reload --run"):
        reload_recorded(tmp_path, dead, ADMIN, model, None, "waits-v3", QUICK)
    record = json.loads((tmp_path / PENDING_RELOAD).read_text())
    assert record["version"] == "waits-v3" and record["model"] == model and "in vain" in record["error"]
    assert ADMIN not in (tmp_path / PENDING_RELOAD).read_text()

    result = CliRunner().invoke(main, ["reload", "--backend-url", url, "--admin-token", ADMIN, "--run", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert serving(url) == "waits-v3" and not (tmp_path / PENDING_RELOAD).exists()
    assert json.loads((tmp_path / PROMOTION_RECORD).read_text())["serving_version"] == "waits-v3"  # said, late
    result = CliRunner().invoke(main, ["reload", "--backend-url", url, "--admin-token", ADMIN, "--run", str(tmp_path)])
    assert result.exit_code != 0 and "no reload is pending" in result.output


def test_the_next_round_finishes_a_reload_an_earlier_round_left_pending(backend, tmp_path):
    url, model = backend
    dead = f"http://127.0.0.1:{free_port()}"
    run = tmp_path / "run"
    for number in (1, 2):  # two rounds whose reloads failed (the backend was down)
        (run / f"round-{number}" / "train").mkdir(parents=True)
        with pytest.raises(IllumeError):
            reload_recorded(run / f"round-{number}" / "train", dead, ADMIN, model, None, f"round-{number}", QUICK)
    said = []
    status = finish_earlier_reloads(run / "round-3" / "train", url, ADMIN, said.append)
    assert status["serving_version"] == "round-2" == serving(url)  # the newest; round 1's is superseded
    assert not list(run.glob(f"round-*/*/{PENDING_RELOAD}"))
    assert any("supersedes" in line for line in said)
    assert finish_earlier_reloads(tmp_path / "elsewhere", url, ADMIN) is None  # not a round of a run
