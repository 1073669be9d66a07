"""The one Label Studio client: label-studio-sdk, with errors that say what to do.

`LabelStudioClient.sdk` is the SDK (`label_studio_sdk.LabelStudio`): typed calls for
projects, ML backends, users, annotations, predictions and snapshot exports. It handles
both kinds of API key (a legacy token, or a personal access token exchanged for
short-lived access tokens and renewed before they expire) and retries transient failures
(connection errors, HTTP 5xx, 429, 408, 409) with backoff, POSTs included.

A POST that is not idempotent (the bulk import, a Data Manager action) must not be retried
blindly: a proxy answering 502 after Label Studio stored an import would make a retry store it
twice. Those go through `request(..., retry=False)`, which raises `OutcomeUnknown` when the
request may or may not have taken effect; the caller checks what Label Studio holds and
retries what is missing (connector.importing, connector.predicting).

Beside it, one small wrapper for what the SDK does not cover or covers poorly, sent through
the SDK's own HTTP client (same auth, same token refresh, same retries): plain JSON routes
(`request`/`get`/`post`/`patch`/`pages`: task listings with `fields=all`, Data Manager
actions, the bulk import), streamed downloads (`stream`, retried until the body starts), and
`read` for the guarded image loader (illume.images), which needs a `requests` response it
can bound by bytes and time; it takes its Authorization header from the SDK.
"""
from __future__ import annotations

import contextlib
import os
import time
from typing import Any, Callable, Iterator

import httpx
import requests
from label_studio_sdk.core.api_error import ApiError

from illume.errors import IllumeError

URL_ENV = "LABEL_STUDIO_URL"
KEY_ENV = "LABEL_STUDIO_API_KEY"
TIMEOUT = 30.0
RETRIES = 3  # attempts after the first, for connection errors and HTTP 5xx/429 (exponential backoff)
TRANSIENT = (429, 502, 503, 504)


class OutcomeUnknown(IllumeError):
    """A request sent without blind retries got no clear answer (connection lost, timeout,
    HTTP 5xx/429/408): Label Studio may or may not have done it. Check its state, then retry."""


class LabelStudioClient:
    def __init__(self, url: str, api_key: str, timeout: float = TIMEOUT, retries: int = RETRIES) -> None:
        self.url = (url or "").rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise IllumeError(f"Label Studio URL {self.url!r} does not start with http:// or https://",
                              f"Pass --url (or set {URL_ENV}) like http://localhost:8080")
        if not api_key:
            raise IllumeError("No Label Studio API key given",
                              f"Pass --api-key or set {KEY_ENV} (Label Studio: Account & Settings -> "
                              "Personal Access Token, or a legacy token).")
        self.api_key, self.timeout, self.retries = api_key.strip(), timeout, retries
        from label_studio_sdk import LabelStudio  # imported on first use: it loads pandas (about 2 s)

        try:
            self.sdk = LabelStudio(base_url=self.url, api_key=self.api_key, timeout=timeout, max_retries=retries)
        except ApiError as exc:  # the SDK checks a personal access token's expiry up front
            raise _refused_key(self.url, exc.status_code, exc.body) from exc
        self._http = self.sdk._client_wrapper.httpx_client  # the SDK's HTTP client: auth, refresh, retries
        self._tokens = self.sdk._client_wrapper._tokens_client

    # -- auth, shared with the guarded image loader --------------------------------------------
    @property
    def is_personal_token(self) -> bool:
        return not self._tokens._use_legacy_token

    def headers(self, renew: bool = False) -> dict[str, str]:
        """The Authorization header the SDK sends (a personal token's access token, renewed on request)."""
        try:
            if renew and self.is_personal_token:
                self._tokens._set_access_token(self._tokens.refresh().access)
            return {"Authorization": self.sdk._client_wrapper.get_headers()["Authorization"]}
        except httpx.HTTPError as exc:
            raise IllumeError(f"could not reach Label Studio at {self.url} to exchange the API key: {exc}",
                              f"Check {URL_ENV} and that Label Studio is running.") from exc
        except (ApiError, ValueError) as exc:  # /api/token/refresh/ refused the token, or answered no JSON
            raise _refused_key(self.url, getattr(exc, "status_code", None), getattr(exc, "body", exc)) from exc

    def read(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """One authenticated `requests` call (the image loader streams and bounds it); an expired
        access token is renewed once."""
        extra = kwargs.pop("headers", {}) or {}
        kwargs.setdefault("timeout", self.timeout)
        response = requests.request(method, url, headers={**extra, **self.headers()}, **kwargs)
        if response.status_code == 401 and self.is_personal_token:
            response.close()
            response = requests.request(method, url, headers={**extra, **self.headers(renew=True)}, **kwargs)
        return response

    # -- plain JSON routes through the SDK's HTTP client ---------------------------------------
    def request(self, method: str, path: str, expect: tuple[int, ...] = (200, 201, 204),
                params: Any = None, json: Any = None, timeout: float | None = None,
                retry: bool = True) -> httpx.Response:
        """One call; `retry=False` for requests that are not idempotent (see OutcomeUnknown)."""
        options: dict[str, Any] = {"timeout_in_seconds": timeout or self.timeout}
        if not retry:
            options["max_retries"] = 0
        failure = OutcomeUnknown if not retry else IllumeError
        try:
            response = self._http.request(path.lstrip("/"), method=method, params=params, json=json,
                                          request_options=options)
        except httpx.TimeoutException as exc:
            raise failure(f"Label Studio at {self.url} did not answer {method} {path} in time",
                          "Check the server's load, or retry.") from exc
        except httpx.TransportError as exc:
            raise failure(f"Cannot reach Label Studio at {self.url} ({type(exc).__name__})",
                          f"Check --url / {URL_ENV} and that Label Studio is running.") from exc
        if not retry and response.status_code not in expect and _uncertain(response.status_code):
            raise OutcomeUnknown(f"Label Studio answered HTTP {response.status_code} to {method} {path}: "
                                 f"{response.text[:200]}", "Check what Label Studio holds before retrying.")
        return self._checked(response, method, path, expect)

    def _checked(self, response: httpx.Response, method: str, path: str, expect: tuple[int, ...]) -> httpx.Response:
        if response.status_code in (401, 403) and response.status_code not in expect:
            raise _refused_key(self.url, response.status_code, f"on {path}")
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
            body = json_body(response, f"GET {path}")
            results = body if isinstance(body, list) else body.get("results", body.get("tasks", []))
            if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
                raise IllumeError(f"Label Studio answered GET {path} with a list that is not one of objects",
                                  f"Check --url / {URL_ENV}: it must be Label Studio's own address.")
            yield from results
            if isinstance(body, list) or not results or (not body.get("next") and len(results) < page_size):
                return
            page += 1

    def check(self) -> dict:
        """Fail early and clearly: is this Label Studio, and does it accept the key?"""
        response = self.request("GET", "/api/version", expect=tuple(range(200, 600)))  # retried when transient
        if response.status_code != 200 or "release" not in response.text:
            raise IllumeError(f"{self.url} does not look like a Label Studio server (GET /api/version answered "
                              f"HTTP {response.status_code})",
                              f"Check --url / {URL_ENV}: it is the address you open Label Studio at.")
        self.headers()  # a personal access token is exchanged here, so a refused one is said now
        return self.get("/api/current-user/whoami")

    @contextlib.contextmanager
    def stream(self, path: str, params: Any = None, read_timeout: float = 3600.0) -> Iterator["ByteStream"]:
        """A streamed GET (large exports): a file-like object over the body. Connection errors
        and transient statuses before the body starts are retried like the SDK's calls; a
        connection lost once the body was handed out is an IllumeError (never retried: the
        caller has read part of it)."""
        started = False
        for attempt in range(self.retries + 1):
            try:
                with self._http.stream(path.lstrip("/"), method="GET", params=params,
                                       request_options={"timeout_in_seconds": read_timeout}) as response:
                    if response.status_code in TRANSIENT and attempt < self.retries:
                        time.sleep(0.5 * 2 ** attempt)  # backoff before retrying a transient answer
                        continue
                    if response.status_code != 200:
                        response.read()
                        self._checked(response, "GET", path, (200,))
                    started = True
                    yield ByteStream(response.iter_bytes())
                    return
            except httpx.TransportError as exc:
                if started:
                    raise IllumeError(f"The connection to Label Studio at {self.url} was lost during the download "
                                      f"of {path} ({type(exc).__name__})",
                                      "Run the command again: it repeats the download safely "
                                      "(an export reuses the snapshot Label Studio already built).") from exc
                if attempt >= self.retries:
                    raise IllumeError(f"Cannot reach Label Studio at {self.url} ({type(exc).__name__})",
                                      f"Check --url / {URL_ENV} and that Label Studio is running.") from exc
                time.sleep(0.5 * 2 ** attempt)


class ByteStream:
    """A read()-able view of an iterator of byte chunks (for ijson)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks, self._buffer = chunks, b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buffer += chunk
        if size < 0:
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


def send_checked(send: Callable[[list], Any], items: list, missing: Callable[[list], list], what: str, todo: str,
                 attempts: int = RETRIES + 1) -> bool:
    """Send `items` with a request that is not idempotent (`send` uses retry=False). After an
    unclear outcome, `missing(items)` says which of them Label Studio still lacks, and only
    those are sent again. True when some were sent again: a request Label Studio was still
    working on when `missing` looked may then have stored them twice."""
    pending = list(items)
    for attempt in range(attempts):
        try:
            send(pending)
            return attempt > 0
        except OutcomeUnknown as exc:
            if attempt + 1 >= attempts:
                raise IllumeError(f"{what} failed {attempts} times: {exc.what}", todo) from exc
            time.sleep(0.5 * 2 ** attempt)  # backoff before looking at what Label Studio holds
            pending = missing(pending)
            if not pending:
                return False
    return False


def _uncertain(status: int) -> bool:
    """Answers after which a request may still have taken effect (the statuses the SDK retries)."""
    return status >= 500 or status in (408, 429, 409)


def _refused_key(url: str, status: Any, detail: Any) -> IllumeError:
    return IllumeError(f"Label Studio at {url} refused the API key (HTTP {status}: {str(detail)[:200]})",
                       f"Check --api-key / {KEY_ENV}: copy a current personal access token (or a legacy token) from "
                       "Label Studio's Account & Settings page (legacy tokens must be enabled on the server).")


def json_body(response: httpx.Response | requests.Response, what: str) -> dict | list:
    """The JSON object or list a response carries; an IllumeError when it carries anything else (a
    proxy's HTML page, a bare string), instead of a traceback further on."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, (dict, list)):
        raise IllumeError(f"Label Studio answered {what} with no JSON object or list: {response.text[:200]!r}",
                          f"Check --url / {URL_ENV}: it must be Label Studio's own address, not a proxy's page.")
    return body


def _json_or_empty(response: httpx.Response) -> Any:
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
