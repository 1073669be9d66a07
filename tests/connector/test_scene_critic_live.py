"""On a real Label Studio: a Shapes-X task carries its scene in its meta, and the default simulated
annotator ticks what is true of that scene, not what merely resembles a reference."""
from __future__ import annotations

import pytest

from connector.export_project import export_project
from connector.importing import ImagePlacer, import_items
from connector.simulate import simulate
from illume.critic import make_critic
from illume.datasets import shapes
from illume.records import TrainingRow, read_jsonl

pytestmark = pytest.mark.label_studio
OTHER = {"red": "green", "green": "blue", "blue": "purple", "purple": "yellow", "yellow": "red",
         "large": "small", "small": "large", "left": "right", "right": "left", "above": "below", "below": "above"}


def _item_with_a_one_word_lie(directory):
    """A Shapes-X item, its first reference, and that reference with the answer's word swapped (false,
    yet ROUGE-L >= 0.7 against the references)."""
    for item in shapes.generate(directory, seed=4, sizes={"val": 30})["val"]:
        words = item.explanations[0].rstrip(".").split()
        if item.answer in OTHER and item.answer in words:
            lie = " ".join(OTHER[w] if w == item.answer else w for w in words) + "."
            if make_critic("rouge-l").tick([lie], item.explanations) == [True]:
                return item, item.explanations[0], lie
    raise AssertionError("no such item among 30")


def test_default_critic_checks_the_scene_in_task_meta(illume_project, tmp_path):
    kit = illume_project
    item, truth, lie = _item_with_a_one_word_lie(kit.image_dir)
    import_items(kit.client, kit.id, [item], ImagePlacer(kit.client, kit.id, kit.server.data_dir, kit.image_dir))
    (task,) = kit.client.pages("/api/tasks", {"project": kit.id, "fields": "all"})
    assert task["meta"]["scene"] == item.meta["scene"]  # the scene travelled with the task
    candidates = [{"value": text, "alias": f"c{i}"} for i, text in enumerate([lie, truth, "the sky is blue."])]
    kit.client.patch(f"/api/tasks/{task['id']}", {"data": {**task["data"], "candidates": candidates}})

    result = simulate(kit.client, kit.project)  # the default critic: auto -> the scene critic here
    assert (result.annotations, result.ticked, result.shown) == (1, 1, 3)
    export_project(kit.client, kit.project, tmp_path / "out")
    rows = read_jsonl(tmp_path / "out" / "rows.jsonl", TrainingRow)
    assert [r.rationale for r in rows if r.kind == "rationale"] == [truth]
