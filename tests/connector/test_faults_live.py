"""Fault injection against a real Label Studio: a proxy that answers 502 or drops the
connection after forwarding, a backend killed mid-batch, a connector killed mid-import and
mid-export; each followed by the normal command again. Afterwards: no duplicate task, no lost
annotation, every export row traceable to the annotation that produced it."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from connector.client import connect
from connector.importing import ImagePlacer, import_items, item_key
from fault_proxy import Fault, FaultProxy
from illume.records import Item

pytestmark = pytest.mark.label_studio


def make_items(kit, count: int, prefix: str = "item") -> list[Item]:
    items = []
    for i in range(count):
        path = kit.image_dir / f"{prefix}-{i}.png"
        Image.new("RGB", (8, 8), ("red", "blue")[i % 2]).save(path)
        items.append(Item(f"{prefix}-{i}", str(path), "what color is the shape ?", ("red", "blue")[i % 2]))
    return items


def item_keys(kit) -> Counter:
    return Counter(item_key(t["data"]) for t in kit.client.pages("/api/tasks", {"project": kit.id}))


@pytest.fixture
def proxy(label_studio):
    proxy = FaultProxy(label_studio.url)
    yield proxy
    proxy.stop()


def test_an_import_answered_502_or_dropped_creates_each_task_once(illume_project, label_studio, proxy):
    kit = illume_project
    items = make_items(kit, 6)
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
    keys = item_keys(kit)
    assert sorted(keys) == sorted((item.item_id, 1) for item in items) and set(keys.values()) == {1}
