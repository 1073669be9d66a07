"""Slow image hosts and slow clients: downloads are shared fairly across requests and hosts, a
request's deadline reaches the download pool, and slow connections are closed or make room, so
/health is always answered."""
from __future__ import annotations

import asyncio
import errno
import logging
import socket
import threading
import time
from dataclasses import dataclass, field

import pytest
import requests
from PIL import Image

from illume.vlm import Query
from ml_backend.batcher import Batcher
from ml_backend.connections import AcceptErrorLog


@dataclass(frozen=True)
class Source:
    host_key: str


@dataclass(eq=False)
class Download:
    """A pending task whose fetch waits on `gate` (a slow host) and counts fetches under way."""

    host: str
    gate: threading.Event
    counts: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def image(self) -> Source:
        return Source(self.host)

    def fetch(self) -> bytes:
        with self.lock:
            now = self.counts.setdefault(self.host, [0, 0])
            now[0] += 1
            now[1] = max(now[1], now[0])  # most at once
        try:
            self.gate.wait(60)
        finally:
            with self.lock:
                self.counts[self.host][0] -= 1
        return b""

    def build(self, _fetched: bytes) -> Query:
        return Query(Image.new("RGB", (8, 8)), "q", "a")


def open_gate() -> threading.Event:
    gate = threading.Event()
    gate.set()
    return gate


def no_candidates(queries):
    return [[] for _ in queries], "v"


@pytest.fixture
def slow():
    gate = threading.Event()
    yield gate
    gate.set()


def test_a_slow_host_holds_only_its_share_of_the_download_pool(slow):
    """45 one-task requests trickling from one host, then a request whose image is elsewhere: it is
    fetched and served at once, while the slow host never has more than `per_host` downloads."""
    batcher = Batcher(no_candidates, batch_size=8, queue_size=100, download_workers=8, per_host=2)
    counts, lock = {}, threading.Lock()
    trickling = [batcher.submit([Download("http://slow:80", slow, counts, lock)]) for _ in range(45)]
    good = batcher.submit([Download("local", open_gate(), counts, lock)])
    assert good.result(30).errors == [None] and not slow.is_set()  # served while every trickling download hangs
    assert not any(f.done() for f in trickling)
    assert counts["http://slow:80"][1] == 2
    slow.set()
    assert all(f.result(60).errors == [None] for f in trickling)
    batcher.stop()


def test_a_request_holds_at_most_its_share_of_the_workers(slow):
    """A request whose images all hang (on many hosts) leaves workers for the next request."""
    batcher = Batcher(no_candidates, batch_size=8, queue_size=100, download_workers=4, per_host=4)
    counts, lock = {}, threading.Lock()
    big = batcher.submit([Download(f"http://h{i}:80", slow, counts, lock) for i in range(10)])
    small = batcher.submit([Download("local", open_gate(), counts, lock)])
    assert small.result(30).errors == [None] and not big.done()
    assert sum(now for now, _ in (counts[f"http://h{i}:80"] for i in range(10) if f"http://h{i}:80" in counts)) == 2
    slow.set()
    assert big.result(60).errors == [None] * 10
    batcher.stop()


def test_a_queued_download_whose_deadline_passed_is_never_started(slow):
    batcher = Batcher(no_candidates, batch_size=8, queue_size=100, download_workers=1)
    counts, lock = {}, threading.Lock()
    holding = batcher.submit([Download("http://slow:80", slow, counts, lock)])
    late = batcher.submit([Download("http://other:80", open_gate(), counts, lock)],
                          deadline=time.monotonic() + 0.2)  # it waits for the only worker, held above
    result = late.result(30)  # dropped once its deadline passes, while the worker is still held
    assert result.errors[0].startswith("dropped: the request's deadline passed") and not slow.is_set()
    slow.set()
    assert holding.result(60).errors == [None]
    batcher.stop()
    assert "http://other:80" not in counts  # its download never started


# ---------------------------------------------------------------------------------- connections
def opened(port: int, first: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    if first:
        sock.sendall(first)
    return sock


def closed_by_server(sock: socket.socket) -> bytes:
    """What the server sent before closing (raises socket.timeout if it never closes)."""
    received = b""
    while chunk := sock.recv(4096):
        received += chunk
    return received


def test_slow_headers_are_cut_off(serve):
    server = serve(header_timeout_s=0.5)
    started = time.monotonic()
    with opened(server.port, b"GET /health HTTP/1.1\r\nHost: x\r\n") as sock:  # the headers never end
        assert closed_by_server(sock) == b""
    assert time.monotonic() - started < 10
    with opened(server.port) as sock:  # nothing sent at all
        assert closed_by_server(sock) == b""
    assert requests.get(f"{server.url}/health", timeout=10).status_code == 200


def test_a_trickling_body_is_answered_408(serve):
    server = serve(body_timeout_s=0.5)
    head = (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{\"tasks\": [")
    with opened(server.port, head) as sock:  # 11 of 1000 bytes, then nothing
        answer = closed_by_server(sock)
    assert answer.startswith(b"HTTP/1.1 408 ") and b"no part of the request body arrived within 0.5 s" in answer


def test_past_the_connection_cap_the_longest_waiting_connection_makes_room(serve):
    server = serve(max_connections=4)
    slow = [opened(server.port, b"GET /health HTTP/1.1\r\n") for _ in range(4)]
    try:
        for sock in slow:  # each one is open (accepted and waiting) before the next
            sock.settimeout(0.2)
            with pytest.raises(socket.timeout):
                sock.recv(1)
            sock.settimeout(20)
        response = requests.get(f"{server.url}/health", timeout=10)
        assert response.status_code == 200
        assert closed_by_server(slow[0]) == b""  # the oldest slow connection was closed for it
    finally:
        for sock in slow:
            sock.close()


def test_accept_errors_are_logged_once_per_interval(caplog):
    loop, forwarded = asyncio.new_event_loop(), []
    try:
        handler = AcceptErrorLog(lambda _loop, context: forwarded.append(context), interval_s=3600)
        with caplog.at_level(logging.ERROR, logger="ml_backend.connections"):
            for _ in range(1000):
                handler(loop, {"message": "socket.accept() out of system resource",
                               "exception": OSError(errno.EMFILE, "Too many open files")})
            handler(loop, {"message": "something else", "exception": ValueError("x")})
    finally:
        loop.close()
    assert len(caplog.records) == 1 and "Too many open files" in caplog.records[0].getMessage()
    assert handler.count == 999 and [c["message"] for c in forwarded] == ["something else"]
