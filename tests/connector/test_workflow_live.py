"""init, import and the simulated annotators against a real Label Studio."""
from __future__ import annotations

import pytest
from PIL import Image

from connector.export_project import export_project
from connector.importing import ImagePlacer, existing_item_ids, import_items
from connector.project import LOWEST_SCORE_FIRST, init_project, read_label_config
from connector.simulate import simulate
from illume.errors import IllumeError
from illume.records import Item, TrainingRow, read_jsonl

pytestmark = pytest.mark.label_studio


def test_init_creates_then_reuses(sync_client, tmp_path):
    config = read_label_config()
    first = init_project(sync_client, "init-idempotent", config, overlap=3)
    again = init_project(sync_client, "init-idempotent", config, overlap=3)
    assert first.created and not again.created
    assert again.project["id"] == first.project["id"]
    assert again.project["maximum_annotations"] == 3 and again.project["sampling"] == LOWEST_SCORE_FIRST
    assert len([p for p in sync_client.pages("/api/projects") if p["title"] == "init-idempotent"]) == 1
    with pytest.raises(IllumeError, match="overlap"):
        init_project(sync_client, "init-idempotent", config, overlap=0)


def test_init_with_unreachable_backend_is_a_clear_error(sync_client):
    with pytest.raises(IllumeError, match="could not connect the ML backend"):
        init_project(sync_client, "init-backend", read_label_config(), backend_url="http://127.0.0.1:9")


def make_items(folder, count=3):
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for k in range(count):
        Image.new("RGB", (8, 8), (40 * k, 0, 0)).save(folder / f"{k}.png")
        items.append(Item(f"item-{k}", str(folder / f"{k}.png"), f"question {k}?", "yes",
                          [f"the thing number {k} is clearly visible"]))
    return items


def test_import_is_idempotent_and_hides_references(illume_project, label_studio):
    kit = illume_project
    items = make_items(kit.image_dir / "import")
    placer = ImagePlacer(kit.client, kit.id, label_studio.data_dir)
    assert import_items(kit.client, kit.id, items[:2], placer).imported == 2
    result = import_items(kit.client, kit.id, items, placer)
    assert (result.imported, result.skipped) == (1, 2)
    assert existing_item_ids(kit.client, kit.id) == {("item-0", 1), ("item-1", 1), ("item-2", 1)}
    # A new round gets its own tasks for the same items (fresh candidates from a newer model).
    assert import_items(kit.client, kit.id, items[:1], placer, round_=2).imported == 1
    assert import_items(kit.client, kit.id, items[:1], placer, round_=2).skipped == 1
    assert ("item-0", 2) in existing_item_ids(kit.client, kit.id)
    task = next(iter(kit.client.pages("/api/tasks", {"project": kit.id})))
    assert task["meta"]["references"] == ["the thing number 0 is clearly visible"]
    assert "references" not in task["data"]  # the data manager shows every data key
    response = kit.client.request("GET", task["data"]["image"])
    assert response.content[:4] == b"\x89PNG"  # Label Studio serves the image


def test_local_image_outside_root_is_refused(illume_project, tmp_path):
    items = make_items(tmp_path / "elsewhere", 1)
    placer = ImagePlacer(illume_project.client, illume_project.id, illume_project.server.data_dir)
    with pytest.raises(IllumeError, match="outside the local-files root"):
        import_items(illume_project.client, illume_project.id, items, placer)


def test_simulated_crowd_annotates_and_exports(illume_project, tmp_path):
    kit = illume_project
    task = kit.add_task("a", ["the ball is red and round", "a cat sits on it"],
                        references=["the ball is red and round"])
    kit.add_task("b", [])  # no candidates yet: skipped
    result = simulate(kit.client, kit.project, annotators=3, error_rate=0.0)
    assert (result.annotations, result.ticked, result.skipped_without_candidates) == (3, 3, 1)
    assert simulate(kit.client, kit.project, annotators=3).annotations == 0  # nothing left to do
    manifest = export_project(kit.client, kit.project, tmp_path / "out")
    rows = read_jsonl(tmp_path / "out" / "rows.jsonl", TrainingRow)
    assert [(r.item_id, r.rationale) for r in rows] == [("a", "the ball is red and round")]
    assert manifest["agreement"]["fleiss_kappa"] == 1.0 and task
