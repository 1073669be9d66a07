"""Tiny local HTTP servers for the connector's tests (image hosts, stand-ins for Label Studio routes)."""
from __future__ import annotations

import http.server
import threading
from typing import Callable


def send(handler: http.server.BaseHTTPRequestHandler, body: bytes, status: int = 200,
         headers: dict[str, str] | None = None) -> None:
    handler.send_response(status)
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def serve(on_get: Callable[[http.server.BaseHTTPRequestHandler], None]) -> http.server.ThreadingHTTPServer:
    """A threaded server on a free local port answering GETs with on_get (stop it with .shutdown())."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            on_get(self)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class ImageHost:
    """Serves one image at every path and counts the requests (and whether they carried credentials)."""

    def __init__(self, body: bytes) -> None:
        self.requests = 0
        self.with_authorization = 0

        def on_get(handler: http.server.BaseHTTPRequestHandler) -> None:
            self.requests += 1
            self.with_authorization += "Authorization" in handler.headers
            send(handler, body)

        self.server = serve(on_get)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
