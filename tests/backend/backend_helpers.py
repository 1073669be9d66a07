"""Helpers for the backend tests: synthetic images, tasks, a uvicorn server in a thread."""
from __future__ import annotations

import base64
import io
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

from illume.labeling_schema import SHIPPED_CONFIG, shipped_text
from illume.ports import free_port
from illume.records import Item
from illume.vlm import SamplingConfig

LABEL_CONFIG = shipped_text(SHIPPED_CONFIG)
FAST_SAMPLING = SamplingConfig(temperatures=(0.7, 1.0), per_temperature=3, max_new_tokens=8)

# A stand-in for `illume-sync round` (args: folder, project, round): records its payload file's
# path, says its round as the real one does first, then waits for <folder>/release.
ROUND_STAND_IN = """
import os, pathlib, sys, time
out = pathlib.Path(sys.argv[1])
(out / f"payload-{sys.argv[2]}").write_text(os.environ["ILLUME_WEBHOOK_PAYLOAD"])
print(f"round {sys.argv[3]}: exporting completed tasks of project {sys.argv[2]}", flush=True)
while not (out / "release").exists():
    time.sleep(0.02)
"""


def png_bytes(color: str = "red", size: tuple[int, int] = (48, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def data_uri(color: str = "red", size: tuple[int, int] = (48, 40)) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(color, size)).decode()


def task(task_id: int, image: str, question: str = "what color is the shape ?", answer: str = "red") -> dict:
    return {"id": task_id, "data": {"image": image, "question": question, "answer": answer}}


class ServerThread:
    """A real uvicorn server in a thread (Label Studio must reach it over HTTP)."""

    def __init__(self, app, port: int | None = None, settings=None) -> None:
        """With `settings`, served as `illume-backend` serves (its connection limits)."""
        import uvicorn

        from ml_backend.connections import server_config

        self.port = port or free_port()
        self.server = uvicorn.Server(server_config(app, settings, "127.0.0.1", self.port, "warning") if settings
                                     else uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)  # readiness poll
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


class LocalHTTPServer:
    """A threaded http.server on 127.0.0.1 whose handler is a function (method, path, headers, body) ->
    (status, headers, body), or a generator of body pieces (for trickling); it records every request."""

    def __init__(self, respond) -> None:
        import http.server

        self.requests: list[tuple[str, str, dict]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.requests.append((self.command, self.path, dict(self.headers)))
                status, headers, payload = respond(self.command, self.path, dict(self.headers), body)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                try:
                    for piece in [payload] if isinstance(payload, bytes) else payload:
                        self.wfile.write(piece)
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = do_PATCH = _handle  # noqa: N815 (http.server's naming)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "LocalHTTPServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def png_response(color: str = "green", size: tuple[int, int] = (48, 40)):
    body = png_bytes(color, size)
    return 200, {"Content-Type": "image/png", "Content-Length": str(len(body))}, body


def colour_items(folder: Path, prefix: str) -> list[Item]:
    """Three one-colour pictures in folder, as items asking their colour, with one reference each."""
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for index, color in enumerate(["red", "blue", "green"]):
        path = folder / f"{prefix}{index}.png"
        Image.new("RGB", (32, 32), color).save(path)
        items.append(Item(f"{prefix}{index}", str(path), "what color is it ?", color, [f"the picture is {color}."]))
    return items


@contextmanager
def held_sampler(vlm, hold_s: float = 60):
    """Hold every model batch of `vlm` until `release` is set (or `hold_s` passes).
    Yields (entered, release, batch sizes seen); the real sampler is back afterwards."""
    entered, release, sizes = threading.Event(), threading.Event(), []
    real_sample = vlm.sample

    def held(queries, *args, **kwargs):
        sizes.append(len(queries))
        entered.set()
        release.wait(hold_s)
        return real_sample(queries, *args, **kwargs)

    vlm.sample = held
    try:
        yield entered, release, sizes
    finally:
        release.set()
        del vlm.sample
