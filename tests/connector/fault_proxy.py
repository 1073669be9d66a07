"""A small HTTP proxy for fault injection: it forwards every request to the real server and,
for requests matching a rule, answers 502 or drops the connection *after* forwarding (so the
server did the work and the client cannot know), or holds the answer until released."""
from __future__ import annotations

import http.server
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import requests

from http_helpers import send

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-encoding", "content-length", "host"}


@dataclass
class Fault:
    method: str
    path: str  # a regular expression the request path (query included) must match from its start
    # "502" | "drop": after forwarding (the server did it); "refuse": 502 without forwarding;
    # "hold": forward, then wait for `release` before answering; "call": forward, run `then`, answer;
    # "late": 502 at once, forwarded only when `deliver()` is called (a gateway that gave up first)
    action: str
    times: int = 1
    then: Callable[[], None] | None = None
    forwarded: threading.Event = field(default_factory=threading.Event)  # set once a matching request went through
    release: threading.Event = field(default_factory=threading.Event)
    deliver: Callable[[], None] | None = None  # "late": forwards the request it answered 502

    def matches(self, method: str, path: str) -> bool:
        return self.times > 0 and method == self.method and re.match(self.path, path) is not None


class FaultProxy:
    """`FaultProxy(upstream)`; `.url` to point a client at; `.add(Fault(...))`; `.injected` counts faults."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults: list[Fault] = []
        self.injected: Counter = Counter()  # by action
        self.requests: Counter = Counter()  # (method, path without query) forwarded
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _handle(self) -> None:
                proxy.handle(self)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle  # noqa: N815 (http.server's naming)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def _take(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.times -= 1
                    return fault
        return None

    def handle(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else None
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in HOP_BY_HOP}
        fault = self._take(handler.command, handler.path)
        if fault is not None and fault.action == "late":
            self.injected[fault.action] += 1
            url, method = self.upstream + handler.path, handler.command
            fault.deliver = lambda: requests.request(method, url, headers=headers, data=body, timeout=900)
            self._send(handler, 502, {"Content-Type": "text/plain"}, b"bad gateway (injected, forwarded later)")
            return
        if fault is not None and fault.action == "refuse":
            self.injected[fault.action] += 1
            self._send(handler, 502, {"Content-Type": "text/plain"}, b"bad gateway (injected, not forwarded)")
            return
        try:
            answer = requests.request(handler.command, self.upstream + handler.path, headers=headers, data=body,
                                      allow_redirects=False, timeout=900)
        except requests.RequestException:
            handler.send_error(504)
            return
        with self._lock:
            self.requests[(handler.command, handler.path.split("?")[0])] += 1
        if fault is not None:
            self.injected[fault.action] += 1
            fault.forwarded.set()
            if fault.action == "hold":
                fault.release.wait(600)
            elif fault.action == "call" and fault.then is not None:
                fault.then()
            elif fault.action == "502":
                self._send(handler, 502, {"Content-Type": "text/plain"}, b"bad gateway (injected)")
                return
            elif fault.action == "drop":
                handler.close_connection = True
                handler.connection.close()  # no answer at all
                return
        self._send(handler, answer.status_code, answer.headers, answer.content)

    @staticmethod
    def _send(handler, status: int, headers, content: bytes) -> None:
        try:
            send(handler, content, status, {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP})
        except OSError:  # the client went away (a killed connector)
            pass

    def stop(self) -> None:
        for fault in self.faults:
            fault.release.set()
        self.server.shutdown()
        self.server.server_close()
