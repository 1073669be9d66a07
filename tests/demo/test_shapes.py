"""Shapes-X: determinism, and answers/explanations/pictures consistent with the scene description."""
from __future__ import annotations

import json
import random
import re
from collections import Counter

import pytest
from PIL import Image

from illume.datasets import shapes
from illume.errors import IllumeError
from illume.records import Item, read_jsonl

SIZES = {"train": 48, "val": 12, "test": 24}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes")
    return out, shapes.generate(out, seed=3, sizes=SIZES)


def _all(written) -> list[Item]:
    return [item for items in written[1].values() for item in items]


def test_same_seed_gives_identical_items_and_image_bytes(written, tmp_path):
    out, _ = written
    again = tmp_path / "again"
    shapes.generate(again, seed=3, sizes=SIZES)
    for split in SIZES:
        assert (out / f"{split}.jsonl").read_bytes() == (again / f"{split}.jsonl").read_bytes()
    pictures = sorted(p.name for p in (out / "images").iterdir())
    assert len(pictures) == sum(SIZES.values())
    assert pictures == sorted(p.name for p in (again / "images").iterdir())
    for name in pictures:
        assert (out / "images" / name).read_bytes() == (again / "images" / name).read_bytes()


def test_another_seed_gives_other_scenes(written, tmp_path):
    other = shapes.generate(tmp_path / "other", seed=4, sizes={"test": 24})["test"]
    mine = written[1]["test"]
    assert sum(a.meta["scene"] == b.meta["scene"] for a, b in zip(mine, other)) < 3


def test_jsonl_round_trips_with_relative_image_paths(written):
    out, items = written
    for split in SIZES:
        read = read_jsonl(out / f"{split}.jsonl", Item)
        assert [i.item_id for i in read] == [i.item_id for i in items[split]]
        assert all(i.split == split and not i.image.startswith("/") for i in read)
        assert all((out / i.image).is_file() for i in read)
    assert len({i.item_id for i in _all(written)}) == sum(SIZES.values())


def test_splits_share_no_scene(written):
    scenes = {split: {json.dumps(i.meta["scene"], sort_keys=True) for i in items} for split, items in written[1].items()}
    assert not scenes["train"] & scenes["test"]
    assert not scenes["train"] & scenes["val"]


def test_question_types_are_balanced(written):
    counts = Counter(i.meta["qtype"] for i in written[1]["train"])
    assert set(counts) == set(shapes.QUESTION_TYPES)
    assert max(counts.values()) - min(counts.values()) <= 1


def test_pictures_show_the_described_shapes(written):
    out, _ = written
    for item in _all(written):
        image = Image.open(out / item.image).convert("RGB")
        scene = item.meta["scene"]
        assert image.size == (scene["size"], scene["size"])
        occupied = set()
        for shape in scene["shapes"]:
            assert image.getpixel((shape["x"], shape["y"])) == shapes.COLORS[shape["color"]]
            occupied.add((shape["row"], shape["col"]))
        cell = scene["size"] // scene["grid"]
        for row in range(scene["grid"]):
            for col in range(scene["grid"]):
                if (row, col) not in occupied:
                    assert image.getpixel((col * cell + cell // 2, row * cell + cell // 2)) == shapes.BACKGROUND


def expected_answer(item: Item) -> str:
    """The answer, recomputed from the scene description alone."""
    scene, targets, qtype = item.meta["scene"]["shapes"], item.meta["targets"], item.meta["qtype"]
    if qtype == "color":
        return scene[targets[0]]["color"]
    if qtype == "shape":
        target = scene[targets[0]]
        assert [s["color"] for s in scene].count(target["color"]) == 1, "the colour must name one shape"
        return target["kind"]
    if qtype == "count":
        return str(len(scene))
    if qtype == "size":
        return scene[targets[0]]["size"]
    if qtype == "position":
        a, b = scene[targets[0]], scene[targets[1]]
        if "left or right" in item.question:
            assert a["col"] != b["col"]
            return "left" if a["col"] < b["col"] else "right"
        assert a["row"] != b["row"]
        return "above" if a["row"] < b["row"] else "below"
    if qtype == "yesno":
        asked = item.meta["asked"]
        return "yes" if any(s["kind"] == asked["kind"] and s["color"] == asked["color"] for s in scene) else "no"
    raise AssertionError(f"unknown question type {qtype}")


def test_answers_follow_from_the_scene(written):
    for item in _all(written):
        assert item.answer == expected_answer(item), item
        for index in item.meta["targets"]:
            target = item.meta["scene"]["shapes"][index]
            if item.meta["qtype"] not in ("shape", "count"):
                assert target["kind"] in item.question  # the question names the shape it is about


WORDS = re.compile(r"[a-z]+")
QUADRANT = re.compile(r"(top|bottom) (left|right)")


def shapes_of_many_scenes() -> list[Item]:
    return [item for item, _ in shapes.generate_split("many", 600, seed=5)]


def test_explanations_state_only_facts_of_the_scene(written):
    for item in _all(written) + shapes_of_many_scenes():
        scene = item.meta["scene"]["shapes"]
        kinds = {s["kind"] for s in scene}
        colors = {s["color"] for s in scene}
        asked = item.meta.get("asked", {})
        targets = [scene[i] for i in item.meta["targets"]]
        assert len(item.explanations) == 3 and len(set(item.explanations)) == 3
        for text in item.explanations:
            words = set(WORDS.findall(text))
            # no shape or colour is mentioned that is neither drawn nor the one asked about
            assert words & set(shapes.KINDS) <= kinds | {asked.get("kind")}, (item.question, text)
            assert words & set(shapes.COLORS) <= colors | {asked.get("color")}, (item.question, text)
            qtype = item.meta["qtype"]
            if qtype in ("color", "shape"):
                assert {targets[0]["kind"], targets[0]["color"]} <= words, text
            elif qtype == "count":
                assert shapes.NUMBER_WORDS[len(scene)] in words or kinds <= words, text
            elif qtype == "size":
                big = {"large", "big", "larger", "most"}
                small = {"small", "tiny", "smaller", "little"}
                said = words & (big | small) - ({"small"} if targets[0]["size"] == "large" else {"large"})
                assert said and said <= (big if targets[0]["size"] == "large" else small), text
            elif qtype == "position":
                assert {targets[0]["kind"], targets[1]["kind"]} <= words, text
                assert words & {"left", "right", "above", "below", "higher", "lower"}, text
            elif qtype == "yesno" and item.answer == "yes":
                assert {asked["kind"], asked["color"]} <= words, text
            elif qtype == "yesno" and asked["kind"] in kinds:
                real = next(s["color"] for s in scene if s["kind"] == asked["kind"])
                assert real in words, text  # names the colour the shape really has
            else:  # the kind asked about is not drawn: says so, or lists every shape there is
                assert words & {"no", "not"} or kinds <= words, text
            for vertical, horizontal in QUADRANT.findall(text):  # "at the top left" is where the target is
                assert any(shapes.where(t) == f"{vertical} {horizontal}" for t in targets), text


def test_position_explanations_agree_with_the_answer(written):
    for item in _all(written):
        if item.meta["qtype"] != "position":
            continue
        first, second = (item.meta["scene"]["shapes"][i]["kind"] for i in item.meta["targets"])
        flipped = {"left": "right", "right": "left", "above": "below", "below": "above"}
        for text in item.explanations:
            # "<first> ... <answer> ... <second>" or "<second> ... <opposite> ... <first>"
            forward = text.index(first) < text.index(second)
            said = [w for w in WORDS.findall(text) if w in flipped or w in ("higher", "lower")]
            said = [{"higher": "above", "lower": "below"}.get(w, w) for w in said]
            if len(said) == 1:
                assert said[0] == (item.answer if forward else flipped[item.answer]), text
            else:  # "the <b> is on the <other> and the <a> on the <side>"
                assert said == [flipped[item.answer], item.answer] and not forward, text


def test_wording_varies_across_items(written):
    shapes_of_text = set()
    for item in _all(written):
        for text in item.explanations:
            words = WORDS.findall(text)
            shapes_of_text.add(" ".join("X" if w in shapes.KINDS or w in shapes.COLORS else w for w in words))
    assert len(shapes_of_text) >= 40


def test_bad_split_size_is_refused(tmp_path):
    with pytest.raises(IllumeError, match="whole number"):
        shapes.generate(tmp_path, sizes={"train": -1})


def test_remarks_are_true_of_the_scene_and_cover_every_family():
    rng = random.Random(11)
    seen = Counter()
    for item in shapes_of_many_scenes()[:300]:
        scene = item.meta["scene"]["shapes"]
        for _ in range(3):
            said = shapes.remark(item.meta["scene"], rng)
            seen[said["family"]] += 1
            words = set(WORDS.findall(said["text"]))
            about = [scene[i] for i in said["about"]]
            assert words & set(shapes.KINDS) == {s["kind"] for s in about}, said
            assert words & set(shapes.COLORS) <= {s["color"] for s in about}, said
            if said["family"] == "one":
                for vertical, horizontal in QUADRANT.findall(said["text"]):
                    assert (about[0]["y"] < 32) == (vertical == "top") and (about[0]["x"] < 32) == (horizontal == "left")
                if words & {"small", "large"}:
                    assert about[0]["size"] in words, said
            elif said["family"] == "two":  # "the <a> is <relation> the <b>", checked on pixel coordinates
                a, b = about
                assert said["text"].index(a["kind"]) < said["text"].index(b["kind"]), said
                if "left" in words:
                    assert a["x"] < b["x"], said
                elif "right" in words:
                    assert a["x"] > b["x"], said
                elif "above" in words:
                    assert a["y"] < b["y"], said
                else:
                    assert "below" in words and a["y"] > b["y"], said
            else:
                assert len(about) == len(scene)
    assert set(seen) == set(shapes.REMARK_FAMILIES) and seen["one"] > seen["two"] > seen["all"]
