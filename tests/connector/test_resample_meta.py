"""A resample asks for new candidates by rewriting each task's meta: it must start from the meta as
it is when it asks, not as it was when the command began (a write in between, e.g. the backend
answering an earlier batch, records which options came after which annotation there)."""
from __future__ import annotations

from connector import resampling
from illume.labeling_schema import SHIPPED_CONFIG, shipped_text
from illume.labelstudio.candidates import APPENDED, StoredTask


def test_each_batch_asks_with_the_meta_it_finds_then(monkeypatch):
    reads, asked = [], {}
    meta = {1: {"references": []}, 2: {"references": []}}

    def stored(client, project, ids):
        reads.append(list(ids))
        return {i: StoredTask({"candidates": []}, True, project, dict(meta[i])) for i in ids}

    def retrieve(client, project, batch, version):  # the backend answers batch [1]: it writes task 2 meanwhile
        meta[2] = {**meta[2], APPENDED: {"c3": 7}}

    monkeypatch.setattr(resampling, "stored_tasks", stored)
    monkeypatch.setattr(resampling, "request_resample", lambda client, task, s: asked.setdefault(task, s.meta))
    monkeypatch.setattr(resampling, "drop_prediction", lambda client, task, version: None)
    monkeypatch.setattr(resampling, "retrieve_tasks", retrieve)
    monkeypatch.setattr(resampling, "follow_backend_version", lambda client, project: "v1")
    project = {"id": 5, "label_config": shipped_text(SHIPPED_CONFIG)}
    resampling.resample(object(), project, [1, 2], batch_size=1)
    assert asked[2] == {"references": [], APPENDED: {"c3": 7}}  # what the write in between added is kept
