"""Connection-level limits for the backend's uvicorn server (h11), so slow clients cannot lock
everyone out:

- a request's headers must arrive within `header_timeout_s` of the connection opening (or of
  its first byte after a kept-alive response), else the connection is closed;
- at most `max_connections` are open: a new one closes the connection that has waited longest
  without a request in progress (a slow or idle client), or is answered 503 when every
  connection is busy, so /health is still answered while hundreds of clients trickle; the
  default cap stays below the open-file limit, so accept() does not run out of descriptors;
- accept() errors (EMFILE and the like) are logged once per interval with a count, not once per
  event.

The per-chunk body read timeout is the ASGI middleware's (illume.request_guard.RequestGuard).
"""
from __future__ import annotations

import asyncio
import errno
import logging
import resource
import time
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)
FD_HEADROOM = 128  # descriptors left for model files, downloads, Label Studio calls and logs
MIN_CONNECTIONS = 16
ACCEPT_LOG_INTERVAL_S = 10.0
_RESOURCE_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\nconnection: close\r\n"
         b"content-length: 42\r\n\r\nthe backend has too many open connections\n")


def connection_cap(requested: int) -> int:
    """`requested` when set (> 0), else the open-file limit less FD_HEADROOM."""
    if requested > 0:
        return requested
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 4096 if soft == resource.RLIM_INFINITY else max(MIN_CONNECTIONS, soft - FD_HEADROOM)


def limited_protocol(max_connections: int, header_timeout_s: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a header deadline and a cap on open connections."""

    class LimitedH11(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            self._header_timer: asyncio.TimerHandle | None = None
            self._idle_since = self.loop.time()
            super().connection_made(transport)
            self._arm()
            if len(self.connections) > max_connections:
                self._make_room()

        def data_received(self, data: bytes) -> None:
            if self.conn.their_state is h11.IDLE:
                self._arm()
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:  # the request's headers are in
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._idle_since = self.loop.time()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(header_timeout_s, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                log.debug("closing %s: no complete request headers within %g s", self.client, header_timeout_s)
                self.transport.close()

        def _waiting(self) -> bool:
            """No request in progress: nothing or part of a request's headers has arrived, or its response
            is complete (a client still sending the body of an answered request waits for nothing)."""
            return self.cycle is None or self.cycle.response_complete

        def _make_room(self) -> None:
            waiting = [c for c in self.connections
                       if c is not self and isinstance(c, LimitedH11) and c._waiting() and not c.transport.is_closing()]
            if waiting:
                min(waiting, key=lambda c: c._idle_since).transport.close()
                return
            self.transport.write(_BUSY)
            self.transport.close()

    return LimitedH11


class AcceptErrorLog:
    """A loop exception handler: accept() running out of resources is logged once per interval
    (with how often it happened since); everything else goes to the previous handler."""

    def __init__(self, previous: Any = None, interval_s: float = ACCEPT_LOG_INTERVAL_S) -> None:
        self.previous = previous
        self.interval_s = interval_s
        self.count = 0
        self.last = float("-inf")

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if not (isinstance(exc, OSError) and exc.errno in _RESOURCE_ERRORS):
            if self.previous is not None:
                self.previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        self.count += 1
        now = time.monotonic()
        if now - self.last >= self.interval_s:
            log.error("cannot accept connections: %s (%d time(s) in the last %g s); raise the open-file limit "
                      "(ulimit -n) or lower --max-connections", exc.strerror or exc, self.count,
                      min(now - self.last, self.interval_s))
            self.last, self.count = now, 0


def install_accept_error_log(loop: asyncio.AbstractEventLoop) -> AcceptErrorLog:
    handler = AcceptErrorLog(loop.get_exception_handler())
    loop.set_exception_handler(handler)
    return handler


def server_config(app: Any, settings: Any, host: str, port: int, log_level: str = "info") -> Any:
    """uvicorn's Config for the backend: one worker, the limits above from `settings`."""
    import uvicorn

    protocol = limited_protocol(connection_cap(settings.max_connections), settings.header_timeout_s)
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, workers=1, http=protocol,
                          timeout_keep_alive=settings.keep_alive_s)
