"""Find, check and set up the Label Studio project that holds the ILLUME tasks."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from illume.labelstudio.client import LabelStudioClient, json_body, send_checked
from illume.errors import IllumeError
from illume.labeling_schema import (INSTRUCTIONS_NAME, MAX_CONFIG_CHARS, SHIPPED_CONFIG, LabelingSchema, parse_schema,
                                    project_schema, shipped_text)
from illume.text import read_text_file

# Label Studio's "Uncertainty sampling" offers tasks with the lowest prediction score first.
LOWEST_SCORE_FIRST = "Uncertainty sampling"
# The skip setting under which a skipped task returns to the same person's stream (a skip settles nothing).
REQUEUE_FOR_ME = "REQUEUE_FOR_ME"
MAX_INSTRUCTIONS_BYTES = 1 << 20  # the page annotators read first; the shipped one is 1 KB


def all_projects(client: LabelStudioClient) -> list[dict]:
    return [p.dict() for p in client.sdk.projects.list(page_size=100)]


def get_project(client: LabelStudioClient, project_id: int) -> dict:
    return client.sdk.projects.get(id=int(project_id)).dict()


def find_project(client: LabelStudioClient, ref: str | int) -> dict:
    """A project by id or exact title; an IllumeError listing what exists when there is none."""
    ref = str(ref).strip()
    if ref.isdigit():
        response = client.request("GET", f"/api/projects/{ref}", expect=(200, 404))
        if response.status_code == 200:
            found = json_body(response, f"GET /api/projects/{ref}")
            if isinstance(found, dict):
                return found
    else:
        matches = sorted((p for p in all_projects(client) if p.get("title") == ref), key=lambda p: p["id"])
        if matches:
            return get_project(client, matches[0]["id"])
    known = ", ".join(f"{p['id']}: {p.get('title')!r}" for p in all_projects(client)[:20]) or "none"
    raise IllumeError(f"Label Studio at {client.url} has no project {ref!r} (projects: {known})",
                      "Pass --project with an existing id or title, or create it with `illume-sync init`.")


def require_schema(project: dict) -> LabelingSchema:
    """The project's labeling schema; an IllumeError saying what its config lacks for the method."""
    return project_schema(project)


def overlap(project: dict) -> int:
    """Annotators per task the project asks for (Label Studio's maximum_annotations)."""
    return max(1, int(project.get("maximum_annotations") or 1))


def required_annotations(project: dict, min_annotations: int | None = None) -> int:
    """Annotations (one per person) that make a task complete for status, export and rounds:
    `min_annotations` when given (--min-annotations), else the project's overlap."""
    if min_annotations is None:
        return overlap(project)
    if min_annotations < 1:
        raise IllumeError(f"--min-annotations must be at least 1, got {min_annotations}",
                          "Pass how many annotators must have judged a task, e.g. 1, or leave it out (the overlap).")
    return int(min_annotations)


def read_label_config(path: Path | None = None) -> str:
    """The labeling config at `path` (checked), else the shipped one."""
    if path is None:
        return shipped_text(SHIPPED_CONFIG)
    path = Path(path)
    if not path.is_file():
        raise IllumeError(f"Labeling config {path} does not exist", "Pass --label-config with an XML file.")
    # bytes: UTF-8 holds at most 4 per character, so a config the schema could take is never cut off
    text = read_text_file(path, "Labeling config", "Pass --label-config with an XML file.", MAX_CONFIG_CHARS * 4)
    parse_schema(text, f" {path}")
    return text


def read_instructions(path: Path | None = None, label_config: Path | None = None) -> str | None:
    """The project instructions: `path`, else the instructions.html beside the labeling config
    (the shipped one by default); None when a custom config has none beside it."""
    if path is None and label_config is None:
        return shipped_text(INSTRUCTIONS_NAME).strip()
    if path is None:
        path = Path(label_config).parent / INSTRUCTIONS_NAME
        if not path.is_file():
            return None
    path = Path(path)
    if not path.is_file():
        raise IllumeError(f"Instructions file {path} does not exist", "Pass --instructions with an HTML or text file.")
    text = read_text_file(path, "Instructions file", "Pass --instructions with an HTML or text file.",
                          MAX_INSTRUCTIONS_BYTES).strip()
    if not text:
        raise IllumeError(f"Instructions file {path} is empty", "Write the guidance annotators should read first.")
    return text


@dataclass
class InitResult:
    project: dict
    created: bool
    backend: dict | None
    model_version: str | None


def init_project(client: LabelStudioClient, title: str, label_config: str, overlap: int = 1,
                 backend_url: str | None = None, backend_title: str = "illume",
                 backend_auth: tuple[str, str] | None = None, description: str = "",
                 instructions: str | None = None) -> InitResult:
    """Create the project (or reuse the one with this title) and connect the ML backend. Idempotent.

    `instructions` (HTML): Label Studio shows them before labeling and on request (None: left as they are)."""
    if overlap < 1:
        raise IllumeError(f"--overlap must be at least 1, got {overlap}", "Pass the number of annotators per task.")
    parse_schema(label_config, f" for project {title!r}")
    settings = {"maximum_annotations": overlap, "sampling": LOWEST_SCORE_FIRST,
                "show_overlap_first": overlap > 1}
    if instructions is not None:
        settings.update(expert_instruction=instructions, show_instruction=True)
    existing = [p for p in all_projects(client) if p.get("title") == title]
    if existing:
        project = get_project(client, min(p["id"] for p in existing))
        changes = {k: v for k, v in settings.items() if project.get(k) != v}
        if (project.get("label_config") or "").strip() != label_config.strip():
            changes["label_config"] = label_config
        if changes:
            client.sdk.projects.update(id=project["id"], **changes)
            project = get_project(client, project["id"])
        created = False
    else:
        body = {"title": title, "label_config": label_config, "description": description, **settings}
        found: list[dict] = []

        def missing(pending: list) -> list:  # an unclear answer: did Label Studio create it anyway?
            found[:] = [p for p in all_projects(client) if p.get("title") == title]
            return [] if found else pending

        send_checked(lambda _: found.append(client.post("/api/projects/", json=body, retry=False)), [title], missing,
                     f"creating project {title!r}", "Run `illume-sync init` again: a project with this title is reused.")
        project = get_project(client, min(p["id"] for p in found))
        created = True
    backend = model_version = None
    if backend_url:
        backend = connect_backend(client, project["id"], backend_url, backend_title, backend_auth)
        model_version = follow_backend_version(client, project)
        project = get_project(client, project["id"])
    return InitResult(project, created, backend, model_version)


def served_model_version(client: LabelStudioClient, project: dict) -> str:
    """The version the project's ML backend serves now (Label Studio asks it via /setup)."""
    backends = project_backends(client, project["id"])
    if not backends:
        raise IllumeError(f"Project {project['id']} ({project.get('title')!r}) has no ML backend connected",
                          "Run `illume-sync init --backend-url URL` first.")
    backend = client.sdk.ml.get(id=backends[0]["id"]).dict()  # reading one backend refreshes its version
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
    return [b.dict() for b in client.sdk.ml.list(project=int(project_id))]


def connect_backend(client: LabelStudioClient, project_id: int, url: str, title: str,
                    auth: tuple[str, str] | None = None) -> dict:
    """Connect (or update) the ML backend at url; Label Studio checks /health and /setup itself."""
    body: dict[str, Any] = {"project": project_id, "url": url.rstrip("/"), "title": title, "is_interactive": False}
    if auth:
        body.update({"auth_method": "BASIC_AUTH", "basic_auth_user": auth[0], "basic_auth_pass": auth[1]})
    same = [b for b in project_backends(client, project_id) if (b.get("url") or "").rstrip("/") == body["url"]]
    path, method = (f"/api/ml/{same[0]['id']}", "PATCH") if same else ("/api/ml", "POST")
    # Label Studio answers 400 when it cannot reach the backend; not a transient error, so no SDK retry
    response = client.request(method, path, json=body, expect=(200, 201, 400))
    if response.status_code == 400:
        raise IllumeError(f"Label Studio could not connect the ML backend at {url}: {response.text[:300]}",
                          "Start it (`illume-backend ...`) where Label Studio can reach it, then run init again.")
    return response.json()


def start_training(client: LabelStudioClient, project: dict) -> dict:
    """Press "Start training" for the project's ML backend (Label Studio sends START_TRAINING to it)."""
    backends = project_backends(client, project["id"])
    if not backends:
        raise IllumeError(f"Project {project['id']} has no ML backend connected",
                          "Run `illume-sync init --backend-url URL` first.")
    client.sdk.ml.train(id=backends[0]["id"])
    return client.sdk.ml.get(id=backends[0]["id"]).dict()
