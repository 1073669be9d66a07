"""Small exports on synthetic images for the training tests."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from illume.records import (ANSWER_ONLY, RATIONALE, Item, PreferencePair, TrainingRow, rationale_weight,
                            sha256_file, write_jsonl)
from illume.layout import EXPORT_MANIFEST, EXPORT_PAIRS, EXPORT_ROWS

COLORS = ("red", "blue", "green", "yellow")


def make_export(directory: Path, items: int = 8, with_manifest: bool = True,
                sizes: tuple[tuple[int, int], ...] = ((40, 40),)) -> Path:
    """An export like `illume-sync export` writes: images/, rows.jsonl, preferences.jsonl, manifest.json."""
    (directory / "images").mkdir(parents=True, exist_ok=True)
    rows, pairs = [], []
    for index in range(items):
        color = COLORS[index % len(COLORS)]
        image = f"images/{index}.png"
        Image.new("RGB", sizes[index % len(sizes)], color).save(directory / image)
        question = "what color is the square ?"
        rows.append(TrainingRow(ANSWER_ONLY, f"i{index}", image, question, color))
        if index % 2 == 0:
            rows.append(TrainingRow(RATIONALE, f"i{index}", image, question, color,
                                    rationale=f"the square is {color}."))
        pairs.append(PreferencePair(f"i{index}", [image], question, color,
                                    chosen=f"the square is {color}.", rejected="there are two dogs on grass."))
    write_jsonl(directory / EXPORT_ROWS, rows)
    write_jsonl(directory / EXPORT_PAIRS, pairs)
    if with_manifest:
        manifest = {"rows": len(rows), "pairs": len(pairs), "rationale_weight": rationale_weight(rows),
                    "sha256": {EXPORT_ROWS: sha256_file(directory / EXPORT_ROWS),
                               EXPORT_PAIRS: sha256_file(directory / EXPORT_PAIRS)}}
        (directory / EXPORT_MANIFEST).write_text(json.dumps(manifest))
    return directory


def make_items(directory: Path, count: int = 4, sizes: tuple[tuple[int, int], ...] = ((40, 40),)) -> Path:
    """Held-out items with three reference explanations each."""
    directory.mkdir(parents=True, exist_ok=True)
    items = []
    for index in range(count):
        color = COLORS[index % len(COLORS)]
        Image.new("RGB", sizes[index % len(sizes)], color).save(directory / f"eval{index}.png")
        items.append(Item(f"e{index}", f"eval{index}.png", "what color is the square ?", color,
                          [f"the square is {color}.", f"it is {color}.", f"the shape is {color}."]))
    write_jsonl(directory / "items.jsonl", items)
    return directory / "items.jsonl"


@pytest.fixture
def export_dir(tmp_path) -> Path:
    return make_export(tmp_path / "export")


@pytest.fixture(name="make_export")
def make_export_fixture():
    """make_export(directory, items=8, with_manifest=True) -> an export directory."""
    return make_export


@pytest.fixture(name="make_items")
def make_items_fixture():
    """make_items(directory, count=4, sizes=((40, 40),)) -> an items.jsonl path."""
    return make_items


@pytest.fixture
def eval_items(tmp_path) -> Path:
    return make_items(tmp_path / "eval")
