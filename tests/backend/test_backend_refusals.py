"""Early answers close their connection, refusals are 4xx (never 500), and what a task holds cannot
forge log lines or hide why it was refused."""
from __future__ import annotations

import base64
import logging
import socket
import time
from types import SimpleNamespace

import pytest
import requests

from backend_helpers import LABEL_CONFIG, ServerThread, data_uri, task
from illume.errors import IllumeError
from illume.images import ImagePolicy
from illume.labelstudio import task as task_io
from illume.request_guard import admin_refusal, basic_auth_refusal

CREDENTIALS = ("studio", "s3cret")
BASIC = b"Authorization: Basic " + base64.b64encode(b"studio:s3cret") + b"\r\n"
LONG = 60  # every server timeout, so that only an early answer's close can end these connections


def posted(port: int, path: bytes, extra: bytes = b"", declared: int = 10_000_000) -> socket.socket:
    """A POST whose headers announce `declared` body bytes (under the body limit), of which one is sent."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + extra +
                 b"Content-Length: %d\r\n\r\n{" % declared)
    return sock


def answer(sock: socket.socket) -> bytes:
    """The response's head and body (read by its Content-Length), the connection left as it is."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(4096) or pytest.fail(f"closed before a whole response: {received!r}")
    head, _, body = received.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.lower().split(b"\r\n") if line.startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(4096) or pytest.fail("closed before the whole body")
    return head.lower() + b"\r\n\r\n" + body


def trickled_until_closed(sock: socket.socket, within_s: float = 10) -> str:
    """Trickles body bytes, as a client still sending its body does, until the server closes the
    connection ("EOF", or "reset" when its close beat a trickled byte); fails past `within_s`."""
    deadline = time.monotonic() + within_s
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            if sock.recv(4096) == b"":
                return "EOF"
        except socket.timeout:
            try:
                sock.sendall(b" ")
            except OSError:
                pass  # closed: the next recv says how
        except ConnectionResetError:
            return "reset"
    pytest.fail(f"the server left the connection open for {within_s} s")


def test_unauthenticated_tricklers_are_closed_and_never_lock_out_health(serve):
    server = serve(basic_auth=CREDENTIALS, max_connections=3, header_timeout_s=LONG, body_timeout_s=LONG,
                   keep_alive_s=LONG)
    attackers = [posted(server.port, b"/predict") for _ in range(3)]
    try:
        for sock in attackers:
            head = answer(sock)
            assert head.startswith(b"http/1.1 401 ") and b"\r\nconnection: close\r\n" in head
        for sock in attackers:
            assert trickled_until_closed(sock) in ("EOF", "reset")
        assert requests.get(f"{server.url}/health", timeout=10).status_code == 200
        # the same three, silent after their answer
        silent = [posted(server.port, b"/predict") for _ in range(3)]
        attackers += silent
        for sock in silent:
            answer(sock)
        assert requests.get(f"{server.url}/health", timeout=10).status_code == 200
    finally:
        for sock in attackers:
            sock.close()


@pytest.mark.parametrize("path, extra, status", [(b"/health", b"", 405), (b"/nope", BASIC, 404),
                                                 (b"/reload", b"Authorization: Bearer wrong\r\n", 401)])
def test_every_answer_sent_before_the_body_was_read_closes_the_connection(serve, path, extra, status):
    server = serve(basic_auth=CREDENTIALS, admin_token="adm1n", header_timeout_s=LONG, body_timeout_s=LONG,
                   keep_alive_s=LONG)
    with posted(server.port, path, extra) as sock:
        head = answer(sock)
        assert head.startswith(b"http/1.1 %d " % status) and b"\r\nconnection: close\r\n" in head
        assert trickled_until_closed(sock) in ("EOF", "reset")


def test_an_answer_after_the_whole_body_keeps_the_connection_alive(serve):
    server = serve(basic_auth=CREDENTIALS, keep_alive_s=LONG)
    with posted(server.port, b"/setup", BASIC, declared=2) as sock:
        sock.sendall(b"}")  # the rest of the 2-byte body "{}"
        head = answer(sock)
        assert head.startswith(b"http/1.1 200 ") and b"connection: close" not in head
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")  # the same connection serves the next request
        assert answer(sock).startswith(b"http/1.1 200 ")


async def _answers_before_reading(scope, receive, send):
    """An app that answers POSTs 401 without reading their body and without `Connection: close`."""
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    status = 200 if scope["method"] == "GET" else 401
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"no"})


def test_a_connection_whose_response_is_complete_makes_room_though_its_body_still_comes():
    limits = SimpleNamespace(max_connections=2, header_timeout_s=LONG, keep_alive_s=LONG)
    with ServerThread(_answers_before_reading, settings=limits) as server:
        tricklers = [posted(server.port, b"/predict") for _ in range(2)]
        try:
            for sock in tricklers:
                assert answer(sock).startswith(b"http/1.1 401 ")
                sock.sendall(b" ")
            assert requests.get(f"{server.url}/health", timeout=10).status_code == 200
            assert trickled_until_closed(tricklers[0]) in ("EOF", "reset")  # the oldest made room
        finally:
            for sock in tricklers:
                sock.close()


# ----------------------------------------------------------------------------------- credentials
def test_non_ascii_credentials_are_refused_not_a_500(make_client):
    assert basic_auth_refusal("Basic éééé", CREDENTIALS) == "HTTP Basic credentials missing or wrong"
    assert basic_auth_refusal("Basic " + base64.b64encode("é:ü".encode()).decode(), CREDENTIALS)
    assert admin_refusal("Bearer éé", "adm1n")[0] == 401
    client, _ = make_client(basic_auth=CREDENTIALS, admin_token="adm1n")
    for header in ("Basic éééé".encode(), "Basic éééé".encode("latin-1"), b"Basic \xff\x00=="):
        response = client.post("/predict", json={"tasks": []}, headers={"Authorization": header})
        assert response.status_code == 401, (header, response.text)
    for header in ("Bearer éé".encode(), "Bearer ü".encode("latin-1")):
        response = client.post("/reload", json={"model": "x"}, headers={"Authorization": header})
        assert response.status_code == 401, (header, response.text)


# ----------------------------------------------------------------------------------- /predict
def test_repeated_task_ids_are_refused_before_sampling(make_client, llava, monkeypatch):
    sampled = []

    def sample(queries, *args, **kwargs):
        sampled.append(queries)
        raise RuntimeError("sampled")  # not pytest.fail: the batcher's thread must live on

    monkeypatch.setattr(llava, "sample", sample)
    client, _ = make_client()
    tasks = [task(1, data_uri("red")), task(2, data_uri("blue")), task(1, data_uri("green")),
             {**task(2, data_uri()), "id": "2"}, task(3, data_uri())]
    response = client.post("/predict", json={"tasks": tasks, "project": "1", "label_config": LABEL_CONFIG})
    assert response.status_code == 422, response.text
    assert response.json()["detail"] == "task ids 1, 2 appear more than once in the request; send each task once"
    assert sampled == []


def test_a_task_id_cannot_forge_log_lines(make_client, caplog):
    forged = "7\n2026-01-01 ERROR ml_backend: forged line"
    assert task_io.task_name({"id": forged}) == "task '7\\n2026-01-01 ERROR ml_backend: forged li'"
    assert task_io.task_name({"id": 7}) == "task 7" and task_io.task_name({"id": "7"}) == "task 7"
    assert len(task_io.task_name({"id": "\x1b" * 1000})) < 200
    client, _ = make_client()
    with caplog.at_level(logging.WARNING, logger="ml_backend"):
        response = client.post("/predict", json={"tasks": [{"id": forged, "data": {}},
                                                          {"id": "\u2028x", "data": {}}], "project": "1"})
    assert response.status_code == 200
    logged = [record.getMessage() for record in caplog.records if "skipped" in record.getMessage()]
    assert len(logged) == 2 and all(message.isprintable() for message in logged), logged


def test_a_field_that_is_not_text_says_so():
    fields, policy = task_io.parse_label_config(None), ImagePolicy()
    for value, kind in [(5, "int"), (["x"], "list"), ({"a": 1}, "dict"), (True, "bool")]:
        data = {"image": data_uri(), "question": value, "answer": "red"}
        with pytest.raises(IllumeError) as raised:
            task_io.task_query({"id": 1, "data": data}, fields, policy)
        assert raised.value.what == f"task 1: field 'question' must be text, got {kind}"
    with pytest.raises(IllumeError, match="field 'answer' is missing or empty"):
        task_io.task_query({"id": 1, "data": {"image": data_uri(), "question": "q", "answer": " "}}, fields, policy)


# ----------------------------------------------------------------------------------- /reload
@pytest.mark.parametrize("body, reason", [
    ({"model": "a" * 300}, "File name too long"),
    ({"model": "x/" * 3000}, "at most 4096 characters"),
    ({"model": "a\x00b"}, "is not a local directory"),
    ({"adapter": "b" * 300}, "File name too long"),
    ({"adapter": "b" * 5000}, "at most 4096 characters"),
])
def test_unusable_reload_paths_are_refused_422(make_client, llava_dir, body, reason):
    client, _ = make_client(admin_token="adm1n")
    response = client.post("/reload", json={"model": str(llava_dir), **body}, headers={"Authorization": "Bearer adm1n"})
    assert response.status_code == 422, response.text
    assert reason in response.text and len(response.text) < 1000
