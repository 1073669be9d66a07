"""Credentials and body size, checked before any route reads the request body.

`RequestGuard` is an ASGI middleware, in front of the ML backend and of the trainer service: HTTP
Basic for the backend's Label Studio routes (and the API docs), a bearer token for the admin routes
(on the trainer, every route), nothing for /health. A request without the right
credentials is answered 401 before its body is read, and a body over the limit is refused
413 from its Content-Length, or while it streams in, so it is never buffered whole. A body
whose next piece takes longer than `body_timeout_s` is answered 408 and its connection closed.
Every answer sent before the request body was read whole closes its connection: otherwise the
client could go on sending a body nobody reads, holding the connection with no timer running.
"""
from __future__ import annotations

import asyncio
import base64
import secrets

from fastapi import HTTPException, status
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from illume.options import option

OPEN_PATHS = frozenset({"/health"})  # Label Studio's health check carries no credentials
ADMIN_PATHS = frozenset({"/reload"})


def max_body_option():
    """The largest request body: a setting of the backend and of the trainer service, declared once."""
    return option(16 * 1024 * 1024, "Largest request body (refused with 413 from Content-Length or while "
                                    "streaming in).", env="ILLUME_MAX_BODY_BYTES", min=1)


def body_timeout_option():
    """Seconds between two pieces of a request body: the backend's and the trainer service's setting."""
    return option(15.0, "Seconds allowed between two pieces of a request body.", env="ILLUME_BODY_TIMEOUT",
                  min=0.1)


def basic_auth_refusal(header: str, expected: tuple[str, str] | None) -> str | None:
    """Why the Authorization header does not carry the configured user and password (None: it does)."""
    if expected is None:
        return None
    scheme, _, encoded = header.partition(" ")
    user = password = None
    if scheme.lower() == "basic":
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except ValueError:  # binascii.Error, UnicodeDecodeError, or non-ASCII text (a bare ValueError)
            pass
    if user is None or not (_same(user, expected[0]) & _same(password, expected[1])):
        return "HTTP Basic credentials missing or wrong"
    return None


def admin_refusal(header: str, expected: str | None) -> tuple[int, str] | None:
    """Admin routes need `Authorization: Bearer <admin token>`; they are off without a token."""
    if not expected:
        return (status.HTTP_403_FORBIDDEN,
                "admin routes are disabled: start the backend with --admin-token (ILLUME_ADMIN_TOKEN)")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not _same(token.strip(), expected):
        return status.HTTP_401_UNAUTHORIZED, "admin token missing or wrong"
    return None


def _same(given: str, expected: str) -> bool:
    return secrets.compare_digest(given.encode(), expected.encode())


class RequestGuard:
    """`admin_paths`: the paths that need the admin token; None: every path but OPEN_PATHS."""

    def __init__(self, app: ASGIApp, basic_auth: tuple[str, str] | None, admin_token: str | None,
                 max_body_bytes: int, body_timeout_s: float | None = None,
                 admin_paths: frozenset[str] | None = ADMIN_PATHS) -> None:
        self.app = app
        self.admin_paths = admin_paths
        self.body_timeout_s = body_timeout_s
        self.basic_auth = basic_auth
        self.admin_token = admin_token
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        body = BodyRead(headers, receive, send)
        refusal = self._refusal(scope["path"], headers.get("authorization", ""))
        if refusal is not None:
            await refusal(scope, body.receive, body.send)
            return
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            await self._too_large(declared)(scope, body.receive, body.send)
            return
        await self.app(scope, self._bounded(body.receive), body.send)

    def _refusal(self, path: str, authorization: str) -> JSONResponse | None:
        if path in OPEN_PATHS:
            return None
        if self.admin_paths is None or path.rstrip("/") in self.admin_paths:
            refused = admin_refusal(authorization, self.admin_token)
            if refused:
                headers = {"WWW-Authenticate": "Bearer"} if refused[0] == 401 else None
                return JSONResponse({"detail": refused[1]}, refused[0], headers=headers)
            return None
        if reason := basic_auth_refusal(authorization, self.basic_auth):
            return JSONResponse({"detail": reason}, status.HTTP_401_UNAUTHORIZED,
                                headers={"WWW-Authenticate": 'Basic realm="illume-backend"'})
        return None

    def _too_large(self, size: str) -> JSONResponse:
        return JSONResponse({"detail": f"the request body is {size} bytes, over the limit of {self.max_body_bytes}; "
                                       "send less per request, or raise --max-body-bytes (ILLUME_MAX_BODY_BYTES)"},
                            status.HTTP_413_CONTENT_TOO_LARGE, headers={"Connection": "close"})

    def _bounded(self, receive: Receive) -> Receive:
        received, complete = 0, False

        async def bounded_receive() -> Message:
            nonlocal received, complete
            if complete or self.body_timeout_s is None:  # after the body, receive() waits for a disconnect
                message = await receive()
            else:
                try:
                    message = await asyncio.wait_for(receive(), self.body_timeout_s)
                except asyncio.TimeoutError:  # a client trickling its body (slowloris) holds a connection
                    raise HTTPException(status.HTTP_408_REQUEST_TIMEOUT,
                                        f"no part of the request body arrived within {self.body_timeout_s:g} s",
                                        headers={"Connection": "close"}) from None
            if message["type"] == "http.request":
                complete = not message.get("more_body", False)
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:  # a body without (or lying about) Content-Length
                    raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE,
                                        f"the request body is more than {self.max_body_bytes} bytes, over the limit; "
                                        "send less per request, or raise --max-body-bytes "
                                        "(ILLUME_MAX_BODY_BYTES)",
                                        headers={"Connection": "close"})
            return message

        return bounded_receive


class BodyRead:
    """Whether the request body has been read whole; until it has, a response says `Connection: close`
    (uvicorn then closes the connection once the response is sent)."""

    def __init__(self, headers: Headers, receive: Receive, send: Send) -> None:
        self.pending = "transfer-encoding" in headers or headers.get("content-length", "0").lstrip("0") != ""
        self._receive, self._send = receive, send

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            self.pending = False
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start" and self.pending:
            headers = list(message.get("headers", []))
            if not any(name.lower() == b"connection" and b"close" in value.lower() for name, value in headers):
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
        await self._send(message)
