"""`export-trl --push-to-hub` reads the layouts it uploads line by line: a line that is not JSON or not
UTF-8, or an `images` entry that is missing or leads outside the export's images/ folder, is an
IllumeError naming the file and the line, before anything is embedded in a dataset (offline)."""
from __future__ import annotations

import json

import pytest

from connector.export import convert
from connector.export_trl import push_to_hub, write_trl_layouts
from illume.errors import IllumeError
from illume.layout import EXPORT_IMAGES, EXPORT_PAIRS, EXPORT_TRL_SFT
from tests.connector.test_export_convert import png_uri, task


@pytest.fixture
def export(tmp_path):
    out = tmp_path / "export"
    convert([task("x", ["r0 is red.", "r1 is blue."], (["c0"], False)),
             task("y", ["s is round."], ([], False), image=png_uri("blue"))], out)
    write_trl_layouts(out)
    (tmp_path / "secret.txt").write_text("top secret\n")
    return out


def append_line(path, data: bytes) -> int:
    """Append one raw line; its line number."""
    lines = path.read_bytes().count(b"\n")
    with open(path, "ab") as handle:
        handle.write(data + b"\n")
    return lines + 1


def good_record(path) -> dict:
    return json.loads(path.read_text().splitlines()[0])


def test_a_good_export_still_converts_and_counts_its_images(export):
    plan = push_to_hub(export, "team/feedback", dry_run=True)
    assert plan.configs == {"sft": 2, "unpaired": 3, "preference": 1} and plan.images == 2


@pytest.mark.parametrize("name", [EXPORT_TRL_SFT, EXPORT_PAIRS])
@pytest.mark.parametrize("line, message", [
    (b'{"images": ["images/a.png"], ', "not valid JSON"),
    (b'{"item_id": "\xff"}', "not UTF-8"),
    (b'{"item_id": "no images"}', '"images" must be a list of image paths, got NoneType'),
    (b'{"images": "images/a.png"}', '"images" must be a list of image paths, got str'),
    (b'{"images": ["../secret.txt"]}', "image '../secret.txt' is not a file inside the export's images/ folder"),
    (b'{"images": ["images/../../secret.txt"]}', "is not a file inside the export's images/ folder"),
    (b'{"images": [7]}', "image '7' is not a file inside"),
])
def test_a_bad_line_is_an_error_naming_the_file_and_line(export, name, line, message):
    number = append_line(export / name, line)
    with pytest.raises(IllumeError) as caught:
        push_to_hub(export, "team/feedback", dry_run=True)
    assert f"{export / name}, line {number}: " in caught.value.what and message in caught.value.what
    assert "export-trl" in caught.value.todo


def test_an_absolute_image_path_is_refused(export, tmp_path):
    record = {**good_record(export / EXPORT_PAIRS), "images": [str(tmp_path / "secret.txt")]}
    number = append_line(export / EXPORT_PAIRS, json.dumps(record).encode())
    with pytest.raises(IllumeError, match=f"line {number}: image '{tmp_path / 'secret.txt'}' is not a file inside"):
        push_to_hub(export, "team/feedback", dry_run=True)


def test_a_symlink_in_images_leading_out_of_the_export_is_refused(export, tmp_path):
    (export / EXPORT_IMAGES / "link.png").symlink_to(tmp_path / "secret.txt")
    record = {**good_record(export / EXPORT_TRL_SFT), "images": ["images/link.png"]}
    number = append_line(export / EXPORT_TRL_SFT, json.dumps(record).encode())
    with pytest.raises(IllumeError, match=f"sft.jsonl, line {number}: image 'images/link.png' is not a file inside"):
        push_to_hub(export, "team/feedback", dry_run=True)
