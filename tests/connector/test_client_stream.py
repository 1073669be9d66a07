"""LabelStudioClient.stream: retried until the body starts, never after (offline, with a fake HTTP client)."""
from __future__ import annotations

import contextlib

import httpx
import pytest

from illume.errors import IllumeError
from illume.labelstudio.client import LabelStudioClient


class _Response:
    def __init__(self, status: int, chunks: list, drop: bool) -> None:
        self.status_code, self._chunks, self._drop = status, chunks, drop

    def iter_bytes(self):
        yield from self._chunks
        if self._drop:
            raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")


class _Http:
    """Answers each stream() with the next of `answers`: an exception to raise on opening, or a _Response."""

    def __init__(self, *answers) -> None:
        self.answers, self.opened = list(answers), 0

    @contextlib.contextmanager
    def stream(self, *args, **kwargs):
        self.opened += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        yield answer


def _client(http: _Http) -> LabelStudioClient:
    client = LabelStudioClient.__new__(LabelStudioClient)  # no SDK, no server
    client.url, client.retries, client._http = "http://ls", 2, http
    return client


def _download(client: LabelStudioClient) -> bytes:
    data = b""
    with client.stream("/api/projects/1/exports/7/download") as body:
        while chunk := body.read(1 << 20):
            data += chunk
    return data


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch):
    monkeypatch.setattr("illume.labelstudio.client.time.sleep", lambda s: None)


def test_a_connection_lost_mid_body_is_a_clear_error_and_not_retried():
    http = _Http(_Response(200, [b'[{"id": 1}, '], drop=True), _Response(200, [b"[]"], drop=False))
    with pytest.raises(IllumeError) as caught:
        _download(_client(http))
    assert "lost during the download" in caught.value.what and "again" in caught.value.todo
    assert isinstance(caught.value.__cause__, httpx.RemoteProtocolError)
    assert http.opened == 1  # half a body was handed out: a second request would mix two answers


def test_failures_before_the_body_starts_are_retried():
    http = _Http(httpx.ConnectError("refused"), _Response(503, [], drop=False),
                 _Response(200, [b"[1, ", b"2]"], drop=False))
    assert _download(_client(http)) == b"[1, 2]" and http.opened == 3


def test_an_unreachable_server_is_a_clear_error():
    http = _Http(*[httpx.ConnectError("refused")] * 3)
    with pytest.raises(IllumeError, match="Cannot reach Label Studio"):
        _download(_client(http))


def test_the_callers_own_errors_pass_through_unchanged():
    http = _Http(_Response(200, [b"[]"], drop=False))
    with pytest.raises(KeyError):
        with _client(http).stream("/api/projects/1/export"):
            raise KeyError("caller")
    assert http.opened == 1
