"""Item readers: VQA-X (both layouts), JSONL, CSV, folders; errors name file, row and field."""
from __future__ import annotations

import json

import pytest

from illume.datasets import read_items
from illume.errors import IllumeError


def test_real_vqax_val_split(vqax_val_path):
    items = read_items(vqax_val_path, image_root="/coco")
    assert len(items) == 729
    first = items[0]
    assert first.item_id == "vqax-6771003"
    assert first.question == "Is this at an event?" and first.answer == "yes"
    assert first.image == "/coco/COCO_val2014_000000006771.jpg"
    assert first.explanations == ["There are people gathered in cosplay.", "Many people are gathered in costumes.",
                                  "people are dressed up in costumes."]
    assert all(1 <= len(i.explanations) <= 3 for i in items)
    assert len({i.item_id for i in items}) == 729


def test_original_vqax_layout(tmp_path):
    path = tmp_path / "vqaX_test.json"
    path.write_text(json.dumps({"262148000": {
        "question": "Where is he?", "image_name": "COCO_val2014_000000262148.jpg",
        "answers": [{"answer": "skate park", "answer_id": 1}, {"answer": "skate park", "answer_id": 2},
                    {"answer": "park", "answer_id": 3}],
        "explanation": ["he is on a ramp", "there are ramps"]}}))
    [item] = read_items(path, image_root=tmp_path)
    assert (item.item_id, item.answer) == ("vqax-262148000", "skate park")
    assert item.explanations == ["he is on a ramp", "there are ramps"]
    assert item.image == str(tmp_path / "COCO_val2014_000000262148.jpg")


def test_column_layout_names_row_and_field(tmp_path, vqax_val_path):
    data = json.loads(vqax_val_path.read_text())
    del data["multiple_choice_answer"]["5"]
    bad = tmp_path / "val.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(IllumeError, match=r"val.json, row 5: field 'multiple_choice_answer'"):
        read_items(bad)


def test_jsonl_resolves_relative_images_and_collects_explanations(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text(json.dumps({"image": "img/a.png", "question": "q?", "answer": "a", "explanations": ["e1", "e2"]})
                    + "\n\n" + json.dumps({"id": "x", "image": "https://example.org/b.jpg", "question": "q2?",
                                           "answer": "b", "explanation": "only one", "source": "web"}) + "\n")
    first, second = read_items(path)
    assert first.image == str(tmp_path / "img" / "a.png") and first.explanations == ["e1", "e2"]
    assert first.item_id == read_items(path)[0].item_id  # stable across reads
    assert (second.item_id, second.image, second.explanations) == ("x", "https://example.org/b.jpg", ["only one"])
    assert second.meta == {"source": "web"}


def test_csv_with_explanation_columns(tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("image,question,answer,explanation,explanation_2\n/abs/a.png,q?,yes,e one,e two\n")
    [item] = read_items(path)
    assert item.explanations == ["e one", "e two"] and item.image == "/abs/a.png"


def test_folder_with_sidecar(tmp_path):
    (tmp_path / "items.csv").write_text("image,question,answer\na.png,q?,yes\n")
    [item] = read_items(tmp_path)
    assert item.image == str(tmp_path / "a.png")


@pytest.mark.parametrize("content, message", [
    ("image,question\na.png,q?\n", r"items.csv: the header lacks the column\(s\) answer"),
    ("image,question,answer\na.png,,yes\n", r"items.csv, row 2: field 'question' is missing"),
])
def test_malformed_csv(tmp_path, content, message):
    (tmp_path / "items.csv").write_text(content)
    with pytest.raises(IllumeError, match=message):
        read_items(tmp_path / "items.csv")


def test_malformed_jsonl_names_the_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"image": "a", "question": "q", "answer": "a"}\n{oops\n')
    with pytest.raises(IllumeError, match=r"x.jsonl, line 2: not valid JSON"):
        read_items(path)


@pytest.mark.parametrize("name, content, message", [
    ("x.jsonl", b'{"image": "a", "question": "q", "answer": "a"}\n{"image": "a", "question": "\xff"}\n',
     r"x.jsonl, line 2: not UTF-8 text"),
    ("x.jsonl", b"[" * 100_000 + b"\n", r"x.jsonl, line 1: JSON nested too deeply"),
    ("x.csv", b"image,question,answer\na.png,q\xe9?,a\n", r"x.csv: not UTF-8 text near row 2"),
    ("x.json", b'{"1": {"question": "\xff"}}', r"x.json is not UTF-8 text"),
    ("x.json", b"[" * 100_000, r"x.json: JSON nested too deeply"),
    ("x.json", b"[]", r"x.json: expected a JSON object, found list"),
])
def test_unreadable_files_are_clear_errors_not_tracebacks(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(IllumeError, match=message) as refused:
        read_items(tmp_path / name)
    assert refused.value.todo


def test_a_spreadsheets_byte_order_mark_and_long_cells(tmp_path):
    """Excel's "CSV UTF-8" starts with a byte-order mark; a cell over the csv module's 128 KiB default
    is judged by the text limit, not refused by the reader."""
    path = tmp_path / "items.csv"
    path.write_bytes("\ufeffimage,question,answer\na.png,Which colour?,red\n".encode())
    [item] = read_items(path)
    assert (item.question, item.answer) == ("Which colour?", "red")
    path.write_text("image,question,answer\na.png,\"" + "x" * 200_000 + "\",a\n")
    with pytest.raises(IllumeError, match=r"row 2: field 'question' is 200000 characters long"):
        read_items(path)
    jsonl = tmp_path / "items.jsonl"
    jsonl.write_bytes(b"\xef\xbb\xbf" + json.dumps({"image": "a.png", "question": "q?", "answer": "a"}).encode())
    assert read_items(jsonl)[0].question == "q?"


def test_duplicate_ids_and_unknown_formats(tmp_path):
    dup = tmp_path / "d.jsonl"
    row = json.dumps({"id": "same", "image": "a", "question": "q", "answer": "a"})
    dup.write_text(row + "\n" + row + "\n")
    with pytest.raises(IllumeError, match="appears twice"):
        read_items(dup)
    with pytest.raises(IllumeError, match="unknown format"):
        (tmp_path / "x.txt").write_text("")
        read_items(tmp_path / "x.txt")
    with pytest.raises(IllumeError, match="does not exist"):
        read_items(tmp_path / "missing.json")
