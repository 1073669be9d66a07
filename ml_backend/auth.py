"""Credentials: HTTP Basic for Label Studio's calls, a bearer token for admin routes."""
from __future__ import annotations

import base64
import binascii
import secrets

from fastapi import HTTPException, Request, status


def check_basic_auth(request: Request, expected: tuple[str, str] | None) -> None:
    """Raise 401 unless the request carries the configured user and password (no-op when unset)."""
    if expected is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    user = password = None
    if scheme.lower() == "basic":
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            pass
    if user is None or not (_same(user, expected[0]) & _same(password, expected[1])):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "HTTP Basic credentials missing or wrong",
                            headers={"WWW-Authenticate": 'Basic realm="illume-backend"'})


def check_admin_token(request: Request, expected: str | None) -> None:
    """Admin routes need `Authorization: Bearer <admin token>`; they are off without a token."""
    if not expected:
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            "admin routes are disabled: start the backend with --admin-token (ILLUME_ADMIN_TOKEN)")
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not _same(token.strip(), expected):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "admin token missing or wrong",
                            headers={"WWW-Authenticate": "Bearer"})


def _same(given: str, expected: str) -> bool:
    return secrets.compare_digest(given.encode(), expected.encode())
