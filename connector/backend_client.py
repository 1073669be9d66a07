"""The ML backend seen from the connector: its health, and reloads through its admin route."""
from __future__ import annotations

import time
from typing import Any

import requests

from illume.errors import IllumeError


def reload_backend(backend_url: str, admin_token: str, model: str, adapter: str | None, version: str | None,
                   timeout: float = 600.0) -> dict[str, Any]:
    """POST /reload on the backend and wait until it serves the new version (or says why not)."""
    url = backend_url.rstrip("/") + "/reload"
    headers = {"Authorization": f"Bearer {admin_token}"}
    try:
        response = requests.post(url, json={"model": model, "adapter": adapter, "version": version},
                                 headers=headers, timeout=30)
    except requests.RequestException as exc:
        raise IllumeError(f"Cannot reach the ML backend at {backend_url} ({type(exc).__name__})",
                          "Check --backend-url and that `illume-backend` is running.") from exc
    if response.status_code in (401, 403):
        raise IllumeError(f"The ML backend refused the admin token (HTTP {response.status_code})",
                          "Pass --admin-token (ILLUME_ADMIN_TOKEN) as the backend was started with.")
    if response.status_code not in (200, 202):
        raise IllumeError(f"The ML backend refused the reload (HTTP {response.status_code}: {response.text[:300]})",
                          "Check the adapter directory and the backend's log.")
    deadline = time.monotonic() + timeout
    while True:
        status = requests.get(url, headers=headers, timeout=30).json()
        if status.get("state") == "failed":
            raise IllumeError(f"The ML backend could not load the adapter: {status.get('error')}",
                              "The old model keeps serving; check the adapter and its base model.")
        if status.get("state") == "ready" and (version is None or status.get("serving_version") == version):
            return status
        if time.monotonic() > deadline:
            raise IllumeError(f"The ML backend did not finish loading within {timeout:.0f} s (state "
                              f"{status.get('state')})", "Check the backend's log; GET /reload shows its state.")
        time.sleep(0.5)  # polling the backend's reload state until a deadline


def backend_health(backend_url: str) -> dict[str, Any]:
    try:
        response = requests.get(backend_url.rstrip("/") + "/health", timeout=5)
        return response.json() if response.status_code == 200 else {"status": f"HTTP {response.status_code}"}
    except (requests.RequestException, ValueError) as exc:
        return {"status": f"unreachable ({type(exc).__name__})"}
