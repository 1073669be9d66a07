"""The one client against a real Label Studio: transient 502s retried, snapshot exports, and
export copying images only through the guarded loader."""
from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from http_helpers import ImageHost
from connector.cli import main
from connector.export_project import export_policy, export_project
from illume.records import TrainingRow, read_jsonl

pytestmark = pytest.mark.label_studio


class FlakyProxy:
    """Forwards to Label Studio, but answers 502 to the first request and to the first export read."""

    def __init__(self, upstream: str) -> None:
        self.upstream, self.seen, self.refused = upstream, [], []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                proxy.seen.append(self.path)
                first_export = "/export" in self.path and not any("/export" in p for p in proxy.refused)
                if len(proxy.seen) == 1 or first_export:
                    proxy.refused.append(self.path)
                    self.send_response(502)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                answer = requests.request(self.command, proxy.upstream + self.path, data=body or None,
                                          headers=headers, timeout=60, allow_redirects=False)
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in ("content-length", "transfer-encoding", "content-encoding", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_PATCH = do_DELETE = _forward

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "FlakyProxy":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()


def test_a_transient_502_is_retried_and_the_command_succeeds(label_studio, illume_project, tmp_path):
    task = illume_project.add_task("a", ["r0", "r1"])
    illume_project.annotate(task, ["c1"])
    with FlakyProxy(label_studio.url) as proxy:
        result = CliRunner().invoke(main, ["export", "-p", str(illume_project.id), "--out", str(tmp_path / "out"),
                                           "--json"],
                                    env={"LABEL_STUDIO_URL": proxy.url, "LABEL_STUDIO_API_KEY": label_studio.token})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["counts"]["rationale_rows"] == 1
    assert len(proxy.refused) == 2 and proxy.seen.count(proxy.refused[1]) == 2  # each 502 was asked again


def rows(out: Path) -> list[tuple]:
    return [(r.item_id, r.kind, r.rationale) for r in read_jsonl(out / "rows.jsonl", TrainingRow)]


def test_snapshot_export_gives_the_same_rows_and_resumes(illume_project, tmp_path):
    kit = illume_project
    for name in ("a", "b", "c"):
        kit.annotate(kit.add_task(name, [f"{name} one", f"{name} two"]), ["c0"])
    kit.add_task("open", ["never annotated"])
    sync = export_project(kit.client, kit.project, tmp_path / "sync", method="sync")
    # an interrupted snapshot export left its record behind: the re-run reuses that snapshot
    state = tmp_path / ".snap.snapshot.json"
    created = kit.client.sdk.projects.exports.create(id=kit.id, title="earlier",
                                                     task_filter_options={"only_with_annotations": True})
    state.write_text(json.dumps({"project": kit.id, "export": created.id}))
    snapshot = export_project(kit.client, kit.project, tmp_path / "snap", method="snapshot")
    assert rows(tmp_path / "snap") == rows(tmp_path / "sync") and len(rows(tmp_path / "sync")) == 3
    assert snapshot["task_ids"] == sync["task_ids"] and snapshot["counts"]["completed"] == 3
    assert kit.client.sdk.projects.exports.list(id=kit.id) == []  # the resumed snapshot was the only one, deleted
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snap", "sync"]  # record and download removed


def test_export_copies_images_only_from_allowed_places(illume_project, tmp_path):
    kit = illume_project
    png = (kit.image_dir / "x.png")
    kit.image("x")  # writes x.png
    server = ImageHost(png.read_bytes())
    outside = tmp_path / "private"
    outside.mkdir()
    (outside / "secret.png").write_bytes(png.read_bytes())
    good = kit.add_task("good", ["r0"])
    kit.annotate(good, ["c0"])
    for item, image in (("remote", f"http://{server.host}/cat.png"), ("local", str(outside / "secret.png"))):
        task = kit.add_task(item, ["r0"])
        data = kit.client.get(f"/api/tasks/{task}")["data"]
        kit.client.patch(f"/api/tasks/{task}/", {"data": {**data, "image": image}})
        kit.annotate(task, ["c0"])
    manifest = export_project(kit.client, kit.project, tmp_path / "out")
    refused = {r["item_id"]: r["reason"] for r in manifest["refused_images"]}
    assert set(refused) == {"remote", "local"} and manifest["counts"]["completed"] == 1
    assert "not in the allowed hosts" in refused["remote"] and "no allowed roots" in refused["local"]
    assert server.requests == 0 and len(list((tmp_path / "out" / "images").iterdir())) == 1
    assert [r[0] for r in rows(tmp_path / "out")] == ["good"]
    # the operator widens the policy explicitly
    widened = export_policy(kit.client, (server.host,), (outside,))
    manifest = export_project(kit.client, kit.project, tmp_path / "out", policy=widened)
    assert manifest["refused_images"] == [] and manifest["counts"]["completed"] == 3 and server.requests == 1
