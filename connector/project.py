"""Find, check and set up the Label Studio project that holds the ILLUME tasks."""
from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connector.client import LabelStudioClient
from illume.errors import IllumeError

LABEL_CONFIG = Path(__file__).resolve().parents[1] / "label_config" / "illume_rationales.xml"
CANDIDATES_VALUE = "$candidates"
# Control names of the shipped labeling config, in one place until the config is parsed into
# one schema object: the ticks, "None of these is correct" (its alias), the written rationale.
RATIONALES_CONTROL = "rationales"
NONE_CONTROL = "none_correct"
NONE_ALIAS = "none"
# Label Studio's "Uncertainty sampling" offers tasks with the lowest prediction score first.
LOWEST_SCORE_FIRST = "Uncertainty sampling"


def all_projects(client: LabelStudioClient) -> list[dict]:
    return list(client.pages("/api/projects", page_size=100))


def find_project(client: LabelStudioClient, ref: str | int) -> dict:
    """A project by id or exact title; an IllumeError listing what exists when there is none."""
    ref = str(ref).strip()
    if ref.isdigit():
        response = client.request("GET", f"/api/projects/{ref}", expect=(200, 404))
        if response.status_code == 200:
            return response.json()
    else:
        matches = sorted((p for p in all_projects(client) if p.get("title") == ref), key=lambda p: p["id"])
        if matches:
            return client.get(f"/api/projects/{matches[0]['id']}")
    known = ", ".join(f"{p['id']}: {p.get('title')!r}" for p in all_projects(client)[:20]) or "none"
    raise IllumeError(f"Label Studio at {client.url} has no project {ref!r} (projects: {known})",
                      "Pass --project with an existing id or title, or create it with `illume-sync init`.")


def candidates_control(label_config: str) -> str | None:
    """The name of the Choices control that shows the task's candidates, if the config has one."""
    try:
        root = ElementTree.fromstring(label_config or "<View/>")
    except ElementTree.ParseError:
        return None
    for element in root.iter("Choices"):
        if element.get("value") == CANDIDATES_VALUE:
            return element.get("name")
    return None


def require_candidates(project: dict) -> str:
    name = candidates_control(project.get("label_config", ""))
    if name is None:
        raise IllumeError(f"Project {project.get('id')} ({project.get('title')!r}) has a labeling config without "
                          f'a <Choices value="{CANDIDATES_VALUE}"> control, so annotators cannot tick candidates',
                          f"Use the config in {LABEL_CONFIG} (or run `illume-sync init` for a new project).")
    return name


def read_label_config(path: Path | None = None) -> str:
    path = Path(path or LABEL_CONFIG)
    if not path.is_file():
        raise IllumeError(f"Labeling config {path} does not exist", "Pass --label-config with an XML file.")
    text = path.read_text(encoding="utf-8")
    if candidates_control(text) is None:
        raise IllumeError(f"Labeling config {path} has no <Choices value=\"{CANDIDATES_VALUE}\"> control",
                          f"Start from {LABEL_CONFIG}.")
    return text


@dataclass
class InitResult:
    project: dict
    created: bool
    backend: dict | None
    model_version: str | None


def init_project(client: LabelStudioClient, title: str, label_config: str, overlap: int = 1,
                 backend_url: str | None = None, backend_title: str = "illume",
                 backend_auth: tuple[str, str] | None = None, description: str = "") -> InitResult:
    """Create the project (or reuse the one with this title) and connect the ML backend. Idempotent."""
    if overlap < 1:
        raise IllumeError(f"--overlap must be at least 1, got {overlap}", "Pass the number of annotators per task.")
    settings = {"maximum_annotations": overlap, "sampling": LOWEST_SCORE_FIRST,
                "show_overlap_first": overlap > 1}
    existing = [p for p in all_projects(client) if p.get("title") == title]
    if existing:
        project = client.get(f"/api/projects/{min(p['id'] for p in existing)}")
        changes = {k: v for k, v in settings.items() if project.get(k) != v}
        if project.get("label_config", "").strip() != label_config.strip():
            changes["label_config"] = label_config
        if changes:
            project = client.patch(f"/api/projects/{project['id']}", changes)
        created = False
    else:
        project = client.post("/api/projects", {"title": title, "label_config": label_config,
                                                "description": description, **settings})
        created = True
    backend = model_version = None
    if backend_url:
        backend = connect_backend(client, project["id"], backend_url, backend_title, backend_auth)
        model_version = follow_backend_version(client, project)
        project = client.get(f"/api/projects/{project['id']}")
    return InitResult(project, created, backend, model_version)


def served_model_version(client: LabelStudioClient, project: dict) -> str:
    """The version the project's ML backend serves now (Label Studio asks it via /setup)."""
    backends = project_backends(client, project["id"])
    if not backends:
        raise IllumeError(f"Project {project['id']} ({project.get('title')!r}) has no ML backend connected",
                          "Run `illume-sync init --backend-url URL` first.")
    backend = client.get(f"/api/ml/{backends[0]['id']}")  # reading one backend refreshes its version
    version = str(backend.get("model_version") or "")
    if not version:
        raise IllumeError(f"The ML backend at {backend.get('url')} reports no model version "
                          f"(state {backend.get('state')!r}: {backend.get('error_message') or 'no error given'})",
                          "Check that the backend is running and that Label Studio can reach it; then retry.")
    return version


def follow_backend_version(client: LabelStudioClient, project: dict) -> str:
    """Make the project's model version the one the ML backend serves; return that version.

    Label Studio's uncertainty sampling (lowest prediction score first) only considers
    predictions whose model_version equals the project's, and annotators are shown the
    predictions of that version. The backend stamps each prediction with the version it
    serves, which changes with every reload, so the project follows it (`init`, `predict`).
    Label Studio accepts a version only once predictions of it exist (or it is a backend's
    title): until then the project keeps what it had, and `predict` sets it afterwards.
    """
    version = served_model_version(client, project)
    if project.get("model_version") != version:
        response = client.request("PATCH", f"/api/projects/{project['id']}", json={"model_version": version},
                                  expect=(200, 400))
        if response.status_code == 200:
            project["model_version"] = version
    return version


def project_backends(client: LabelStudioClient, project_id: int) -> list[dict]:
    found = client.get("/api/ml", params={"project": project_id})
    return found if isinstance(found, list) else found.get("results", [])


def connect_backend(client: LabelStudioClient, project_id: int, url: str, title: str,
                    auth: tuple[str, str] | None = None) -> dict:
    """Connect (or update) the ML backend at url; Label Studio checks /health and /setup itself."""
    body: dict[str, Any] = {"project": project_id, "url": url.rstrip("/"), "title": title, "is_interactive": False}
    if auth:
        body.update({"auth_method": "BASIC_AUTH", "basic_auth_user": auth[0], "basic_auth_pass": auth[1]})
    same = [b for b in project_backends(client, project_id) if b.get("url", "").rstrip("/") == body["url"]]
    path, method = (f"/api/ml/{same[0]['id']}", "PATCH") if same else ("/api/ml", "POST")
    response = client.request(method, path, json=body, expect=(200, 201, 400))
    if response.status_code == 400:
        raise IllumeError(f"Label Studio could not connect the ML backend at {url}: {response.text[:300]}",
                          "Start it (`illume-backend ...`) where Label Studio can reach it, then run init again.")
    return response.json()
