"""A small HTTP client for the Label Studio API: URL + API key, with errors that say what to do.

Both kinds of API key work (legacy token, or personal access token exchanged for a
short-lived bearer token and renewed on 401): illume.images.LabelStudioAuth makes the headers.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterator

import requests

from illume.errors import IllumeError
from illume.images import LabelStudioAuth

URL_ENV = "LABEL_STUDIO_URL"
KEY_ENV = "LABEL_STUDIO_API_KEY"
TIMEOUT = 30.0


@dataclass
class LabelStudioClient:
    url: str
    api_key: str
    timeout: float = TIMEOUT
    session: requests.Session = field(default_factory=requests.Session, repr=False)
    auth: LabelStudioAuth = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise IllumeError(f"Label Studio URL {self.url!r} does not start with http:// or https://",
                              f"Pass --url (or set {URL_ENV}) like http://localhost:8080")
        if not self.api_key:
            raise IllumeError("No Label Studio API key given",
                              f"Pass --api-key or set {KEY_ENV} (Label Studio: Account & Settings -> "
                              "Personal Access Token, or a legacy token).")
        self.auth = LabelStudioAuth(self.url, self.api_key, self.timeout)

    def _send(self, method: str, path: str, auth: bool = True, refresh: bool = False, **kwargs: Any) -> requests.Response:
        url = path if path.startswith("http") else f"{self.url}{path}"
        headers = dict(kwargs.pop("headers", {}) or {})
        if auth:
            headers.update(self.auth.headers(renew=refresh))
        kwargs.setdefault("timeout", self.timeout)
        try:
            return self.session.request(method, url, headers=headers, **kwargs)
        except requests.ConnectionError as exc:
            raise IllumeError(f"Cannot reach Label Studio at {self.url} ({type(exc).__name__})",
                              f"Check --url / {URL_ENV} and that Label Studio is running.") from exc
        except requests.Timeout as exc:
            raise IllumeError(f"Label Studio at {self.url} did not answer {method} {path} in time",
                              "Check the server's load, or retry.") from exc

    def request(self, method: str, path: str, expect: tuple[int, ...] = (200, 201, 204), **kwargs: Any) -> requests.Response:
        response = self._send(method, path, **kwargs)
        if response.status_code == 401 and self.auth.is_personal_token:
            response = self._send(method, path, refresh=True, **kwargs)  # the access token expired
        if response.status_code in (401, 403):
            raise IllumeError(f"Label Studio at {self.url} refused the API key (HTTP {response.status_code} "
                              f"on {path})",
                              f"Check --api-key / {KEY_ENV}: copy the token from Label Studio's "
                              "Account & Settings page (legacy tokens must be enabled on the server).")
        if response.status_code not in expect:
            raise IllumeError(f"Label Studio answered HTTP {response.status_code} to {method} {path}: "
                              f"{response.text[:300]}",
                              "Check the request's inputs; the server log may say more.")
        return response

    def get(self, path: str, **kwargs: Any) -> Any:
        return _json_or_empty(self.request("GET", path, **kwargs))

    def post(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        return _json_or_empty(self.request("POST", path, json=json, **kwargs))

    def patch(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        return _json_or_empty(self.request("PATCH", path, json=json, **kwargs))

    def delete(self, path: str, **kwargs: Any) -> None:
        self.request("DELETE", path, **kwargs)

    def pages(self, path: str, params: dict[str, Any] | None = None, page_size: int = 100) -> Iterator[dict]:
        """Every result of a paginated list endpoint (also accepts plain-list answers)."""
        page = 1
        while True:
            response = self.request("GET", path, params={**(params or {}), "page": page, "page_size": page_size},
                                    expect=(200, 404))
            if response.status_code == 404:
                return  # Label Studio answers 404 for a page past the end
            body = response.json()
            results = body if isinstance(body, list) else body.get("results", body.get("tasks", []))
            yield from results
            if isinstance(body, list) or not body.get("next") and len(results) < page_size:
                return
            if not results:
                return
            page += 1

    def check(self) -> dict:
        """Fail early and clearly: is this Label Studio, and does it accept the key?"""
        response = self._send("GET", "/api/version", auth=False)
        if response.status_code != 200 or "label-studio-os-package" not in response.text and "release" not in response.text:
            raise IllumeError(f"{self.url} does not look like a Label Studio server (GET /api/version answered "
                              f"HTTP {response.status_code})",
                              f"Check --url / {URL_ENV}: it is the address you open Label Studio at.")
        return self.get("/api/current-user/whoami")

    def stream(self, path: str, params: dict[str, Any] | None = None) -> requests.Response:
        """A streamed GET (for large exports): the caller reads response.raw and closes it."""
        response = self.request("GET", path, params=params, stream=True, timeout=(self.timeout, 3600))
        response.raw.decode_content = True
        return response


def _json_or_empty(response: requests.Response) -> Any:
    if not response.content:
        return {}
    try:
        return response.json()
    except ValueError:
        return {}


def connect(url: str | None = None, api_key: str | None = None, check: bool = True) -> LabelStudioClient:
    """A client from flags or, when they are missing, LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY."""
    url = url or os.environ.get(URL_ENV)
    api_key = api_key or os.environ.get(KEY_ENV)
    if not url:
        raise IllumeError("No Label Studio URL given", f"Pass --url or set {URL_ENV}, e.g. http://localhost:8080")
    client = LabelStudioClient(url, api_key or "")
    if check:
        client.check()
    return client
