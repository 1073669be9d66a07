"""Connector fixtures: a fresh ILLUME project per test on the session's Label Studio."""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from PIL import Image

_counter = itertools.count()


class ProjectKit:
    """One project plus helpers to add tasks (with candidates and images) and annotations."""

    def __init__(self, client, server, project: dict, image_dir: Path) -> None:
        self.client, self.server, self.project, self.image_dir = client, server, project, image_dir
        self.users: dict[str, int] = {}

    @property
    def id(self) -> int:
        return self.project["id"]

    def image(self, name: str, color: str = "red") -> str:
        from connector.importing import ImagePlacer

        path = self.image_dir / f"{name}.png"
        Image.new("RGB", (8, 8), color).save(path)
        return ImagePlacer(self.client, self.id, self.server.data_dir).url(str(path))

    def add_task(self, item_id: str, candidates: list[str], question: str = "what color?", answer: str = "red",
                 references: list[str] | None = None, color: str = "red") -> int:
        data = {"image": self.image(item_id, color), "question": question, "answer": answer, "item_id": item_id,
                "candidates": [{"value": c, "alias": f"c{i}"} for i, c in enumerate(candidates)]}
        self.client.post(f"/api/projects/{self.id}/import", [{"data": data, "meta": {"references": references or []}}])
        tasks = [t for t in self.client.pages("/api/tasks", {"project": self.id}) if t["data"]["item_id"] == item_id]
        return tasks[0]["id"]

    def user(self, name: str) -> int:
        if name not in self.users:
            email = f"{name}@illume.test"
            known = [u["id"] for u in self.client.get("/api/users/") if u.get("email") == email]
            self.users[name] = known[0] if known else self.client.post(
                "/api/users/", {"email": email, "username": name})["id"]
        return self.users[name]

    def predict(self, task: int, preticks: list[str] = (), score: float = 0.5, version: str = "v1") -> int:
        """A stored prediction (as the ML backend makes them) pre-ticking these aliases; its id."""
        result = [{"from_name": "rationales", "to_name": "image", "type": "choices",
                   "value": {"choices": list(preticks)}}] if preticks else []
        prediction = self.client.post("/api/predictions", {"task": task, "result": result, "score": score,
                                                           "model_version": version})["id"]
        self.client.patch(f"/api/projects/{self.id}", {"model_version": version})  # as `predict` does
        return prediction

    def annotate(self, task: int, ticks: list[str] = (), written: str | None = None, user: str | None = None,
                 cancelled: bool = False, none: bool = False, from_prediction: int | None = None) -> int:
        result = []
        if ticks:
            result.append({"from_name": "rationales", "to_name": "image", "type": "choices", "value": {"choices": list(ticks)}})
        if none:
            result.append({"from_name": "none_correct", "to_name": "image", "type": "choices", "value": {"choices": ["none"]}})
        if written:
            result.append({"from_name": "written_rationale", "to_name": "image", "type": "textarea",
                           "value": {"text": [written]}})
        body = {"result": result, "was_cancelled": cancelled}
        if from_prediction is not None:  # what the labeling interface records when it starts from a prediction
            body["parent_prediction"] = from_prediction
        if user:
            body["completed_by"] = self.user(user)
        return self.client.post(f"/api/tasks/{task}/annotations", body)["id"]


@pytest.fixture(scope="session")
def sync_client(label_studio):
    from illume.labelstudio.client import connect

    return connect(label_studio.url, label_studio.token)


@pytest.fixture
def illume_project(label_studio, sync_client, tmp_path_factory):
    from connector.project import init_project, read_label_config

    title = f"test-{next(_counter)}-{tmp_path_factory.getbasetemp().name}"
    project = init_project(sync_client, title, read_label_config()).project
    image_dir = Path(label_studio.data_dir) / "images" / title
    image_dir.mkdir(parents=True)
    return ProjectKit(sync_client, label_studio, project, image_dir)


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    """The shared server, or (for quick local runs) one already running, described by the JSON
    file in ILLUME_TEST_LABEL_STUDIO: {"url", "token", "data_dir"}."""
    import json
    import os

    from connector.local_label_studio import LocalLabelStudio

    running = os.environ.get("ILLUME_TEST_LABEL_STUDIO")
    if running:
        info = json.loads(Path(running).read_text())
        server = LocalLabelStudio(Path(info["data_dir"]), port=int(info["url"].rsplit(":", 1)[1]), token=info["token"])
        yield server
        return
    server = LocalLabelStudio(tmp_path_factory.mktemp("label-studio"))
    server.start()
    yield server
    server.stop()
