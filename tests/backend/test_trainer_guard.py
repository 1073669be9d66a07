"""The trainer service checks the bearer token and the body's size before it reads a body, as the
backend does (illume.request_guard), and answers a body that is not JSON with 400, never 500."""
from __future__ import annotations

import http.server
import threading

import pytest
import requests

from backend_helpers import ServerThread
from test_backend_refusals import answer, posted

TOKEN = "trainer-t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def trainer():
    from connector.trainer_service import TrainerSettings, create_app

    settings = TrainerSettings(command="true", token=TOKEN, max_body_bytes=1000, body_timeout_s=60)
    with ServerThread(create_app(settings)) as server:
        yield server


def test_without_the_token_nothing_but_health_answers_and_no_body_is_read(trainer):
    for extra in (b"", b"Authorization: Bearer wrong\r\n", b"Authorization: Basic dTpw\r\n"):
        sock = posted(trainer.port, b"/webhook", extra, declared=900)  # 1 of 900 bytes sent: never read
        try:
            head = answer(sock)
        finally:
            sock.close()
        assert head.startswith(b"http/1.1 401 ") and b"\r\nconnection: close\r\n" in head
    assert requests.get(f"{trainer.url}/training", timeout=10).status_code == 401
    assert requests.get(f"{trainer.url}/openapi.json", timeout=10).status_code == 401
    assert requests.get(f"{trainer.url}/health", timeout=10).json()["status"] == "UP"
    assert requests.get(f"{trainer.url}/training", headers=AUTH, timeout=10).status_code == 200


def test_a_body_over_the_limit_is_refused_whether_declared_or_streamed(trainer):
    declared = requests.post(f"{trainer.url}/webhook", data=b"{" + b" " * 2000 + b"}", headers=AUTH, timeout=10)
    assert declared.status_code == 413 and "ILLUME_MAX_BODY_BYTES" in declared.json()["detail"]
    streamed = requests.post(f"{trainer.url}/webhook", data=iter([b"{", b" " * 800, b" " * 800, b"}"]),
                             headers=AUTH, timeout=10)  # chunked: no Content-Length to refuse up front
    assert streamed.status_code == 413
    assert requests.get(f"{trainer.url}/training", headers=AUTH, timeout=10).json()["presses"] == []


@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe\x00", b"[" * 900])
def test_a_body_that_is_not_json_is_a_clear_400(trainer, body):
    response = requests.post(f"{trainer.url}/webhook", data=body, headers=AUTH, timeout=10)
    assert response.status_code == 400 and "START_TRAINING" in response.json()["detail"]


def test_json_other_than_start_training_starts_nothing(trainer):
    for payload in ([1, 2], {"action": "PROJECT_UPDATED", "project": {"id": 3}}, "START_TRAINING"):
        response = requests.post(f"{trainer.url}/webhook", json=payload, headers=AUTH, timeout=10)
        assert response.status_code == 200 and response.json()["status"] == "ignored"
    assert requests.get(f"{trainer.url}/training", headers=AUTH, timeout=10).json()["presses"] == []


class _NotJson(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (the handler's API)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b"<html>a proxy's page</html>"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_the_forwarder_says_what_came_back_when_it_is_not_the_trainers_answer():
    from connector.trainer_service import forward

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotJson)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        started, line = forward(f"http://127.0.0.1:{server.server_address[1]}", TOKEN,
                                {"action": "START_TRAINING", "project": 3})
    finally:
        server.shutdown()
    assert not started and "not a JSON object" not in line and "other than a JSON object" in line
    assert "a proxy's page" in line


@pytest.mark.parametrize("content", [None, b"{not json", b"[1]", b"\xff"])
def test_the_forwarder_says_what_is_wrong_with_its_payload_file(tmp_path, monkeypatch, capsys, content):
    from connector.trainer_service import main

    payload = tmp_path / "payload.json"
    if content is not None:
        payload.write_bytes(content)
    monkeypatch.setenv("ILLUME_TRAINER_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("ILLUME_WEBHOOK_PAYLOAD", str(payload))
    with pytest.raises(SystemExit) as exited:
        main(["forward"])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and str(payload) in error and "--train-command" in error

