"""Fault injection against a real Label Studio: a proxy that answers 502 or drops the
connection after forwarding, a backend killed mid-batch, a connector killed mid-import and
mid-export; each followed by the normal command again. Afterwards: no duplicate task, no lost
annotation, every export row traceable to the annotation that produced it."""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import requests
from PIL import Image

from illume.labelstudio.client import connect
from illume.labelstudio.task import item_key
from connector.importing import ImagePlacer, import_items
from fault_proxy import Fault, FaultProxy
from illume.records import Item

pytestmark = pytest.mark.label_studio


def make_items(image_dir: Path, count: int, prefix: str = "item") -> list[Item]:
    items = []
    for i in range(count):
        path = image_dir / f"{prefix}-{i}.png"
        Image.new("RGB", (8, 8), ("red", "blue")[i % 2]).save(path)
        items.append(Item(f"{prefix}-{i}", str(path), "what color is the shape ?", ("red", "blue")[i % 2]))
    return items


def item_keys(client, project_id: int) -> Counter:
    return Counter(item_key(t["data"]) for t in client.pages("/api/tasks", {"project": project_id}))


@pytest.fixture
def proxy(label_studio):
    proxy = FaultProxy(label_studio.url)
    yield proxy
    proxy.stop()


def test_an_import_answered_502_or_dropped_creates_each_task_once(illume_project, label_studio, proxy):
    kit = illume_project
    items = make_items(kit.image_dir, 6)
    client = connect(proxy.url, label_studio.token)
    placer = ImagePlacer(client, kit.id, Path(label_studio.data_dir))
    route = rf"/api/projects/{kit.id}/import"
    proxy.add(Fault("POST", route, "502"))  # stored, then a 502
    assert import_items(client, kit.id, items[:2], placer).imported == 2
    proxy.add(Fault("POST", route, "drop"))  # stored, then no answer
    assert import_items(client, kit.id, items[:4], placer).imported == 2
    proxy.add(Fault("POST", route, "refuse"))  # not stored: sent again after checking
    assert import_items(client, kit.id, items, placer).imported == 2
    assert import_items(client, kit.id, items, placer).skipped == 6  # the normal command again
    assert proxy.injected == Counter({"502": 1, "drop": 1, "refuse": 1})
    assert proxy.requests[("POST", f"/api/projects/{kit.id}/import")] == 3  # each batch reached Label Studio once
    keys = item_keys(kit.client, kit.id)
    assert sorted(keys) == sorted((item.item_id, 1) for item in items) and set(keys.values()) == {1}


# -- the whole workflow under faults ---------------------------------------------------------
ADMIN = "adm1n"
REPO = Path(__file__).resolve().parents[2]


class BackendProcess:
    """`illume-backend` in its own process on a fixed port, so it can be killed and started again."""

    def __init__(self, model: Path, label_studio_url: str, token: str, root: Path, log: Path) -> None:
        from illume.ports import free_port

        self.port, self.log = free_port(), log
        self.command = [sys.executable, "-m", "ml_backend.server", "--model", str(model), "--host", "127.0.0.1",
                        "--port", str(self.port), "--admin-token", ADMIN, "--allowed-roots", str(root),
                        "--label-studio-url", label_studio_url, "--label-studio-api-key", token,
                        "--max-new-tokens", "12", "--per-temperature", "2"]
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        from connector.local_label_studio import wait_until_healthy

        with open(self.log, "ab") as handle:
            self.process = subprocess.Popen(self.command, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO)
        wait_until_healthy(self.process, self.healthy, "the ML backend", self.log, 300)

    def healthy(self) -> bool:
        try:
            return requests.get(f"{self.url}/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()


def write_items(folder: Path, items: list[Item]) -> Path:
    path = folder / f"items-{len(items)}.jsonl"
    path.write_text("".join(json.dumps({"item_id": i.item_id, "image": i.image, "question": i.question,
                                        "answer": i.answer}) + "\n" for i in items))
    return path


def sync(*args: str) -> list[str]:
    """The command line of `illume-sync` (run from the repository)."""
    return [sys.executable, "-c", "from connector.cli import main; main()", *args]


def run_sync(env: dict, *args: str) -> dict:
    result = subprocess.run(sync(*args, "--json"), env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout[result.stdout.index("{"):])


def killed_mid_request(env: dict, proxy: FaultProxy, fault: Fault, *args: str) -> None:
    """Run the command until the held request went through Label Studio, then SIGKILL it."""
    proxy.add(fault)
    process = subprocess.Popen(sync(*args), env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert fault.forwarded.wait(600), f"the command never sent {fault.method} {fault.path}"
    finally:
        process.kill()
        process.wait()
        fault.release.set()


@pytest.mark.slow
def test_the_workflow_under_faults_loses_and_duplicates_nothing(label_studio, tiny_model_dir, tmp_path, capsys):
    from connector.backend_client import reload_backend
    from connector.predicting import project_predictions, retrieve_predictions
    from connector.project import init_project, read_label_config
    from illume.records import TrainingRow, iter_jsonl
    from illume.layout import EXPORT_ROWS
    from illume.tiny_models import build_tiny_model

    data_dir, token = Path(label_studio.data_dir), label_studio.token
    ls_proxy = FaultProxy(label_studio.url)  # between Label Studio and everyone else
    backend = BackendProcess(tiny_model_dir("llava"), ls_proxy.url, token, data_dir, tmp_path / "backend.log")
    backend.start()
    ml_proxy = FaultProxy(backend.url)  # between Label Studio and the backend
    reruns, kills = Counter(), Counter()
    try:
        client = connect(ls_proxy.url, token)
        title = f"faults-{secrets.token_hex(4)}"  # a new project (init reuses a title), also on a reused server
        project = init_project(client, title, read_label_config(), backend_url=ml_proxy.url).project
        pid = project["id"]
        env = {**os.environ, "LABEL_STUDIO_URL": ls_proxy.url, "LABEL_STUDIO_API_KEY": token}
        images = data_dir / "images" / title
        images.mkdir(parents=True)
        direct = connect(label_studio.url, token)  # for the test's own reads and the annotators
        items = make_items(images, 12)
        common = ("--project", str(pid))
        imports = rf"/api/projects/{pid}/import"

        # Import: the connector killed mid-import (after Label Studio stored the batch), a 502 and a
        # dropped answer after storing; each followed by the normal command again.
        killed_mid_request(env, ls_proxy, Fault("POST", imports, "hold"), "import", str(write_items(tmp_path, items[:4])),
                           "--local-files-root", str(data_dir), *common)
        kills["connector mid-import"] += 1
        assert run_sync(env, "import", str(write_items(tmp_path, items[:4])), "--local-files-root", str(data_dir),
                        *common)["skipped"] == 4
        reruns["import"] += 1
        ls_proxy.add(Fault("POST", imports, "502"))
        assert run_sync(env, "import", str(write_items(tmp_path, items[:8])), "--local-files-root", str(data_dir),
                        *common)["imported"] == 4
        ls_proxy.add(Fault("POST", imports, "drop"))
        assert run_sync(env, "import", str(write_items(tmp_path, items[:10])), "--local-files-root", str(data_dir),
                        *common)["imported"] == 2

        # Predictions: Label Studio's action answered 502 after it ran, the backend's answer to
        # Label Studio lost (502 after it wrote candidates), a candidates PATCH answered 502.
        ls_proxy.add(Fault("POST", r"/api/dm/actions", "502"))
        ml_proxy.add(Fault("POST", r"/predict", "502"))
        ls_proxy.add(Fault("PATCH", r"/api/tasks/\d+/", "502"))
        run_sync(env, "predict", "--batch-size", "4", *common)
        done = run_sync(env, "predict", "--batch-size", "4", *common)  # the normal command again
        reruns["predict"] += 1
        assert done["requested"] == done["predicted"]

        # The backend killed mid-batch: right after it wrote the first task's candidates.
        assert run_sync(env, "import", str(write_items(tmp_path, items)), "--local-files-root", str(data_dir),
                        *common)["imported"] == 2
        ls_proxy.add(Fault("PATCH", r"/api/tasks/\d+/", "call", then=backend.kill))
        subprocess.run(sync("predict", *common), env=env, cwd=REPO, capture_output=True, timeout=900)
        kills["backend mid-batch"] += 1
        backend.start()
        done = run_sync(env, "predict", *common)
        reruns["predict"] += 1
        assert done["predicted"] == done["requested"] == 2

        # People annotate (straight to Label Studio): each ticks the first two options of six tasks.
        tasks = {t["id"]: t for t in direct.pages("/api/tasks", {"project": pid, "fields": "all"})}
        ticked: dict[int, dict[str, str]] = {}  # annotation id -> {alias: text}
        annotated: dict[int, int] = {}  # annotation id -> task id
        for task in sorted(tasks.values(), key=lambda t: t["id"])[:6]:
            options = task["data"]["candidates"][:2]
            body = {"result": [{"from_name": "rationales", "to_name": "image", "type": "choices",
                                "value": {"choices": [o["alias"] for o in options]}}]}
            annotation = direct.post(f"/api/tasks/{task['id']}/annotations", body)["id"]
            ticked[annotation] = {o["alias"]: o["value"] for o in options}
            annotated[annotation] = task["id"]

        # A new model version; its reload waits through 502s; Label Studio re-predicts the
        # annotated tasks (its action answered 502 after running, a PATCH answered 502).
        other = build_tiny_model("llava", tmp_path / "other-llava", seed=1)
        ml_proxy.add(Fault("GET", r"/reload", "502", times=2))
        assert reload_backend(ml_proxy.url, ADMIN, str(other), None, "faults-v2")["serving_version"] == "faults-v2"
        ls_proxy.add(Fault("POST", r"/api/dm/actions", "502"))
        ls_proxy.add(Fault("PATCH", r"/api/tasks/\d+/", "502"))
        retrieve_predictions(client, pid, sorted(set(annotated.values())), "faults-v2")
        for annotation, task in annotated.items():  # the ticked options are still there, same text
            stored = {o["alias"]: o["value"] for o in direct.get(f"/api/tasks/{task}")["data"]["candidates"]}
            assert all(stored.get(alias) == text for alias, text in ticked[annotation].items())

        # Export: the snapshot's creation answered 502, its download dropped; then the connector
        # killed mid-download, and the normal command again.
        out = tmp_path / "export"
        ls_proxy.add(Fault("POST", rf"/api/projects/{pid}/exports", "502"))
        ls_proxy.add(Fault("GET", rf"/api/projects/{pid}/exports/\d+/download", "drop"))
        run_sync(env, "export", "--out", str(out), *common)
        first_rows = sorted(json.dumps(r.__dict__, sort_keys=True) for r in iter_jsonl(out / EXPORT_ROWS, TrainingRow))
        killed_mid_request(env, ls_proxy, Fault("GET", rf"/api/projects/{pid}/exports/\d+/download", "hold"),
                           "export", "--out", str(out), *common)
        kills["connector mid-export"] += 1
        run_sync(env, "export", "--out", str(out), *common)
        reruns["export"] += 1
        rows = list(iter_jsonl(out / EXPORT_ROWS, TrainingRow))
        assert sorted(json.dumps(r.__dict__, sort_keys=True) for r in rows) == first_rows

        # No duplicate task, no lost annotation, every row traceable to the annotation that made it.
        keys = item_keys(direct, pid)
        assert sorted(keys) == sorted((item.item_id, 1) for item in items) and set(keys.values()) == {1}
        final_tasks = {t["id"]: t for t in direct.pages("/api/tasks", {"project": pid, "fields": "all"})}
        found = {a["id"] for t in final_tasks.values() for a in
                 direct.get(f"/api/tasks/{t['id']}/annotations")}
        assert found == set(annotated)
        expected = set()
        for annotation, task in annotated.items():
            options = {o["alias"]: o["value"] for o in final_tasks[task]["data"]["candidates"]}
            expected |= {(final_tasks[task]["data"]["item_id"], options[alias]) for alias in ticked[annotation]}
        assert {(r.item_id, r.rationale) for r in rows if r.rationale} == expected
        per_version = Counter((p["task"], p["model_version"]) for p in project_predictions(direct, pid).values())
        assert set(per_version.values()) == {1}  # no prediction twice either

        faults = sum(ls_proxy.injected.values()) + sum(ml_proxy.injected.values()) - ls_proxy.injected["call"]
        figures = {"faults injected": faults + sum(kills.values()), "proxy faults": faults, "kills": dict(kills),
                   "commands re-run": sum(reruns.values()), "duplicates": sum(keys.values()) - len(keys),
                   "lost annotations": len(set(annotated) - found)}
        with capsys.disabled():
            print(f"\nfault-injection figures: {json.dumps(figures)}")
    finally:
        backend.kill()
        ls_proxy.stop()
        ml_proxy.stop()


def test_an_import_stored_after_its_502_leaves_one_task_per_item(illume_project, label_studio, proxy):
    """The gateway gives up (502) before Label Studio stores the batch, which it does only after
    the import checked what was missing and sent it again: the second copy nobody judged is removed."""
    kit = illume_project
    items = make_items(kit.image_dir, 3)
    client = connect(proxy.url, label_studio.token)
    placer = ImagePlacer(client, kit.id, Path(label_studio.data_dir))
    route = rf"/api/projects/{kit.id}/import"
    late = proxy.add(Fault("POST", route, "late"))
    proxy.add(Fault("POST", route, "call", then=lambda: late.deliver()))  # the resend, then the late first one
    result = import_items(client, kit.id, items, placer)
    assert (result.imported, result.copies_removed) == (3, 3)
    tasks = list(kit.client.pages("/api/tasks", {"project": kit.id, "fields": "all"}))
    assert sorted(t["data"]["item_id"] for t in tasks) == sorted(item.item_id for item in items)
    assert proxy.injected == Counter({"late": 1, "call": 1})


def test_a_prediction_answered_502_or_dropped_is_stored_once(illume_project, label_studio, proxy):
    from connector.predicting import project_predictions, store_prediction

    kit = illume_project
    tasks = [kit.add_task(f"pred-{i}", ["the square is red."]) for i in range(3)]
    client = connect(proxy.url, label_studio.token)
    for task, action in zip(tasks, ("502", "drop", "refuse")):
        proxy.add(Fault("POST", r"/api/predictions", action))
        store_prediction(client, task, {"result": [], "score": 0.5, "model_version": "offline-v1"})
    assert proxy.injected == Counter({"502": 1, "drop": 1, "refuse": 1})
    stored = Counter(p["task"] for p in project_predictions(kit.client, kit.id).values())
    assert stored == Counter(tasks)  # one each: the refused one sent again, the others not


def test_a_simulated_annotation_answered_502_or_dropped_is_saved_once(illume_project, label_studio, proxy):
    from connector.simulate import simulate
    from illume.critic import make_critic

    kit = illume_project
    tasks = [kit.add_task(f"vote-{i}", ["the square is red.", "it is blue."]) for i in range(3)]
    client = connect(proxy.url, label_studio.token)
    for action in ("502", "drop", "refuse"):
        proxy.add(Fault("POST", r"/api/tasks/\d+/annotations", action))
    simulate(client, kit.project, annotators=1, critic=make_critic("rouge-l"))
    assert proxy.injected == Counter({"502": 1, "drop": 1, "refuse": 1})
    votes = Counter(a["task"] for t in tasks for a in kit.client.get(f"/api/tasks/{t}/annotations/"))
    assert votes == Counter(tasks)  # one vote each: the refused one sent again, the others not


def test_a_project_creation_answered_502_or_dropped_makes_one_project(label_studio, proxy, tmp_path):
    from connector.project import init_project, read_label_config

    client = connect(proxy.url, label_studio.token)
    for action in ("502", "drop"):
        title = f"once-{action}-{tmp_path.name}"
        proxy.add(Fault("POST", r"/api/projects/?$", action))
        result = init_project(client, title, read_label_config())
        same = [p for p in client.pages("/api/projects", {}) if p.get("title") == title]
        assert result.created and [p["id"] for p in same] == [result.project["id"]]
    assert proxy.injected == Counter({"502": 1, "drop": 1})
