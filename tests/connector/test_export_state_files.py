"""The export's state files: the snapshot record beside --out and the --previous manifest (offline)."""
from __future__ import annotations

import contextlib
import io
import json
import logging
from types import SimpleNamespace

import pytest

import connector.export_project as export_project
from connector.export_project import _state_path, forget_snapshot, next_iteration, snapshot_tasks
from illume.errors import IllumeError


class _FakeLabelStudio:
    """The calls snapshot_tasks and forget_snapshot make, recorded; every snapshot is complete at once."""

    url = "http://ls"

    def __init__(self, next_id: int = 8) -> None:
        self.next_id, self.created, self.deleted = next_id, [], []
        exports = SimpleNamespace(create=self._create, get=lambda id, export_pk: SimpleNamespace(status="completed"))
        self.sdk = SimpleNamespace(projects=SimpleNamespace(exports=exports))

    def _create(self, id, **kwargs):
        self.created.append(self.next_id)
        return SimpleNamespace(id=self.next_id)

    @contextlib.contextmanager
    def stream(self, path, params=None):
        yield io.BytesIO(json.dumps([{"id": 1, "data": {}, "annotations": []}]).encode())

    def request(self, method, path, expect=()):
        self.deleted.append(path)


def _read(client, out):
    with snapshot_tasks(client, 1, out) as tasks:
        return [task["id"] for task in tasks]


@pytest.mark.parametrize("record", ["", '{"project": 1, "export": 7, "annotat', "[7]", "null", "\xff"])
def test_an_unreadable_snapshot_record_starts_a_fresh_snapshot_with_a_warning(tmp_path, caplog, record):
    out = tmp_path / "export"
    _state_path(out).write_bytes(record.encode("latin-1"))
    client = _FakeLabelStudio()
    with caplog.at_level(logging.WARNING):
        assert _read(client, out) == [1]
    assert client.created == [8]
    assert json.loads(_state_path(out).read_text())["export"] == 8
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        f"ignoring the unreadable snapshot record {_state_path(out)}: starting a new snapshot"]


def test_a_readable_snapshot_record_is_resumed(tmp_path):
    out = tmp_path / "export"
    _state_path(out).write_text(json.dumps({"project": 1, "export": 7, "annotated_only": True}))
    client = _FakeLabelStudio()
    assert _read(client, out) == [1] and client.created == []


def test_the_snapshot_record_is_written_atomically(tmp_path, monkeypatch):
    written = []
    monkeypatch.setattr(export_project, "atomic_write_text", lambda path, text: written.append((path, text)))
    out = tmp_path / "export"
    _read(_FakeLabelStudio(), out)
    assert [(path, json.loads(text)["export"]) for path, text in written] == [(_state_path(out), 8)]


def test_forgetting_an_unreadable_snapshot_record_removes_the_files(tmp_path):
    out = tmp_path / "export"
    _state_path(out).write_text('{"project": 1, "export": 7, "annotat')
    download = _state_path(out).with_name(".export.snapshot-7.json")
    download.write_text("[]")
    client = _FakeLabelStudio()
    forget_snapshot(client, 1, out)
    assert client.deleted == []  # which snapshot is unknown: nothing to delete in Label Studio
    assert not _state_path(out).exists() and not download.exists()


def test_forgetting_a_snapshot_keeps_a_neighbours_download(tmp_path):
    out = tmp_path / "run*"
    _state_path(out).write_text(json.dumps({"project": 1, "export": 7}))
    neighbour = tmp_path / ".run-2.snapshot-9.json"
    neighbour.write_text("[]")
    client = _FakeLabelStudio()
    forget_snapshot(client, 1, out)
    assert client.deleted == ["/api/projects/1/exports/7"] and neighbour.is_file()


@pytest.mark.parametrize("manifest", ['{"iteration": ', '{"iteration": null}', '{"iteration": "2"}',
                                      '{"iteration": true}', '{"iteration": 1.5}', "[1]", "\xff"])
def test_an_unreadable_previous_manifest_is_a_clear_error(tmp_path, manifest):
    (tmp_path / "manifest.json").write_bytes(manifest.encode("latin-1"))
    with pytest.raises(IllumeError) as caught:
        next_iteration(tmp_path)
    assert str(tmp_path / "manifest.json") in caught.value.what and "--previous" in caught.value.todo


def test_the_next_iteration_follows_the_previous_manifest(tmp_path):
    assert next_iteration(None) == 0 and next_iteration(tmp_path) == 0  # no manifest: the first iteration
    (tmp_path / "manifest.json").write_text('{"rows": 3}')
    assert next_iteration(tmp_path) == 0
    (tmp_path / "manifest.json").write_text('{"iteration": 2}')
    assert next_iteration(tmp_path) == 3
