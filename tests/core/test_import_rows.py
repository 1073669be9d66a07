"""Importing items refuses what the backend and the export would refuse later (overlong texts, control
characters, values that are not texts, meta that is not an object), each as an error naming the file,
the line or row and the field; item ids may be integers, and 0 is an id like any other."""
from __future__ import annotations

import json

import pytest

from illume.datasets import read_items
from illume.errors import IllumeError

ROW = {"image": "http://x/a.png", "question": "what colour?", "answer": "red"}


def _jsonl(tmp_path, *rows):
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.mark.parametrize("change, message", [
    ({"meta": "abc"}, r"line 2: field 'meta' is a text, not a JSON object"),
    ({"meta": 5}, r"line 2: field 'meta' is a number, not a JSON object"),
    ({"meta": [1]}, r"line 2: field 'meta' is a list, not a JSON object"),
    ({"question": "x\x00" * 1_500_000}, r"line 2: field 'question' is 3000000 characters long, over the limit"),
    ({"answer": "re\x00d"}, r"line 2: field 'answer' holds the control character U\+0000"),
    ({"question": ["what", "colour"]}, r"line 2: field 'question' is a list, not a text"),
    ({"answer": {"a": 1}}, r"line 2: field 'answer' is an object, not a text"),
    ({"image": ["a.png"]}, r"line 2: field 'image' is a list, not a text"),
    ({"item_id": "../" * 3000}, r"line 2: field 'item_id' is 9000 characters long, over the limit of 200"),
    ({"item_id": "a\x00b"}, r"line 2: field 'item_id' holds the control character"),
    ({"item_id": ["x"]}, r"line 2: field 'item_id' is a list, not a text or an integer"),
    ({"id": True}, r"line 2: field 'id' is true or false, not a text or an integer"),
    ({"explanations": [{"a": 1}, None, 3]}, r"line 2: field 'explanations' holds an object \(explanation 1\)"),
    ({"explanations": ["fine", "x" * 2001]}, r"line 2: explanation 2 is 2001 characters long"),
    ({"split": ["train"]}, r"line 2: field 'split' is a list, not a text"),
])
def test_bad_rows_are_refused_naming_line_and_field(tmp_path, change, message):
    with pytest.raises(IllumeError, match=message) as refused:
        read_items(_jsonl(tmp_path, ROW, {**ROW, **change}))
    assert str(tmp_path / "items.jsonl") in refused.value.what and refused.value.todo


def test_the_text_limit_is_the_exports(tmp_path, monkeypatch):
    path = _jsonl(tmp_path, {**ROW, "question": "q" * 3000})
    monkeypatch.setenv("ILLUME_MAX_TEXT_CHARS", "4000")
    assert read_items(path)[0].question == "q" * 3000
    monkeypatch.setenv("ILLUME_MAX_TEXT_CHARS", "100")
    with pytest.raises(IllumeError, match="over the limit of 100"):
        read_items(path)


def test_integer_ids_are_their_decimal_text_and_zero_is_an_id(tmp_path):
    items = read_items(_jsonl(tmp_path, {**ROW, "item_id": 0}, {**ROW, "item_id": 1}, {**ROW, "id": 12, "question": "b"},
                              {**ROW, "item_id": "", "id": "x7", "question": "c"}))
    assert [i.item_id for i in items] == ["0", "1", "12", "x7"]


def test_zero_ids_collide_like_other_ids(tmp_path):
    with pytest.raises(IllumeError, match="item id '0' appears twice"):
        read_items(_jsonl(tmp_path, {**ROW, "item_id": 0}, {**ROW, "id": "0", "question": "b"}))


def test_good_rows_still_read_as_before(tmp_path):
    [item] = read_items(_jsonl(tmp_path, {**ROW, "question": "  what colour?  ", "meta": {"round": 2},
                                          "explanations": ["it is red.", None, " ", "red paint."], "source": "web"}))
    assert (item.question, item.explanations) == ("what colour?", ["it is red.", "red paint."])
    assert item.meta == {"round": 2, "source": "web"} and item.item_id.startswith("item-")


def test_csv_rows_are_checked_too(tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("image,question,answer,meta,explanation\na.png,q?,yes,,\nb.png,q\x01?,no,,\n")
    with pytest.raises(IllumeError, match=r"items.csv, row 3: field 'question' holds the control character U\+0001"):
        read_items(path)
    path.write_text("image,question,answer\na.png,q?,yes,surplus\n")
    with pytest.raises(IllumeError, match=r"items.csv, row 2: 1 cell\(s\) more than the header"):
        read_items(path)
    path.write_text("image,question,answer,meta\na.png,q?,yes,{}\n")
    with pytest.raises(IllumeError, match=r"row 2: field 'meta' is a text, not a JSON object"):
        read_items(path)


def test_a_count_written_as_a_json_number_is_its_decimal_text(tmp_path):
    items = read_items(_jsonl(tmp_path, {**ROW, "answer": 2}, {**ROW, "answer": 0, "question": "b"}))
    assert [i.answer for i in items] == ["2", "0"]
    with pytest.raises(IllumeError, match="field 'answer' is true or false"):
        read_items(_jsonl(tmp_path, {**ROW, "answer": True}))
