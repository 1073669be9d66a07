"""`--previous`: a carried row brings only an image file of the previous export's images/ folder
that passes the image checks; any other path (../, absolute, a symlink leading out, not an image)
leaves the row out, reported in the manifest, with nothing linked (offline, real files)."""
from __future__ import annotations

import json
import os

import pytest

from connector.export import ExportOptions, convert
from illume.layout import EXPORT_IMAGES, EXPORT_PAIRS, EXPORT_ROWS, EXPORT_UNTICKED
from illume.records import TrainingRow, read_jsonl
from tests.connector.test_export_convert import png_uri, task

SECRET = b"top secret\n"


@pytest.fixture
def previous(tmp_path):
    """e0 (x: r0 accepted, r1 unticked, one pair; y: answer-only), and a secret file beside it."""
    out = tmp_path / "e0"
    convert([task("x", ["r0 is red.", "r1 is blue."], (["c0"], False)),
             task("y", ["s is round."], ([], False), image=png_uri("blue"))], out)
    (tmp_path / "secret.txt").write_bytes(SECRET)
    return out


def append(path, *records):
    with open(path, "a", encoding="utf-8") as handle:
        handle.writelines(json.dumps(record) + "\n" for record in records)


def answer_row(item_id, image, task_id):
    return {"kind": "answer", "item_id": item_id, "image": image, "question": "q?", "answer": "a",
            "task_id": task_id}


def tamper(previous, secret):
    """Rows, a pair and an unticked row naming the secret by "../", by its absolute path, and through a
    symlink inside images/; a text file inside images/ that is no image."""
    (previous / EXPORT_IMAGES / "link.png").symlink_to(secret)
    (previous / EXPORT_IMAGES / "notes.png").write_bytes(SECRET)
    append(previous / EXPORT_ROWS, answer_row("dotdot", "../secret.txt", 9001),
           answer_row("absolute", str(secret), 9002), answer_row("symlink", "images/link.png", 9003),
           answer_row("not-an-image", "images/notes.png", 9004))
    pair = json.loads((previous / EXPORT_PAIRS).read_text().splitlines()[0])
    append(previous / EXPORT_PAIRS, {**pair, "item_id": "evil-pair", "images": [str(secret)], "task_id": 9005})
    unticked = json.loads((previous / EXPORT_UNTICKED).read_text().splitlines()[0])
    append(previous / EXPORT_UNTICKED, {**unticked, "item_id": "evil-unticked", "image": "../secret.txt",
                                        "task_id": 9006})


def next_export(previous, out):
    return convert([task("z", ["t is tall."], (["c0"], False))], out, ExportOptions(previous=previous, iteration=1))


def test_rows_naming_files_outside_the_previous_images_are_left_out_and_reported(previous, tmp_path):
    secret = tmp_path / "secret.txt"
    tamper(previous, secret)
    manifest = next_export(previous, tmp_path / "e1")

    refused = {entry["item_id"]: entry for entry in manifest["refused_images"]}
    assert set(refused) == {"dotdot", "absolute", "symlink", "not-an-image", "evil-pair", "evil-unticked"}
    assert manifest["counts"]["refused_images"] == 6
    assert refused["evil-pair"]["carried_from"] == str(previous / EXPORT_PAIRS)
    assert refused["dotdot"]["carried_from"] == str(previous / EXPORT_ROWS) and refused["dotdot"]["task"] == 9001
    for item in ("dotdot", "absolute", "symlink", "evil-unticked"):
        assert "not a file inside its images/ folder" in refused[item]["reason"]
        assert "--previous" in refused[item]["todo"]
    assert "not a readable image" in refused["not-an-image"]["reason"]

    new = tmp_path / "e1"
    texts = "".join((new / name).read_text() for name in (EXPORT_ROWS, EXPORT_PAIRS, EXPORT_UNTICKED))
    assert not any(item in texts for item in refused) and "secret" not in texts
    for image in (new / EXPORT_IMAGES).iterdir():
        assert not image.is_symlink() and image.read_bytes() != SECRET
        assert not os.path.samestat(image.stat(), secret.stat())
    assert secret.stat().st_nlink == 1  # never hard-linked anywhere
    assert set(manifest["images"]) == {f"{EXPORT_IMAGES}/{p.name}" for p in (new / EXPORT_IMAGES).iterdir()}


def test_good_rows_pairs_and_unticked_rows_still_carry_with_their_images(previous, tmp_path):
    tamper(previous, tmp_path / "secret.txt")
    next_export(previous, tmp_path / "e1")
    new = tmp_path / "e1"
    rows = read_jsonl(new / EXPORT_ROWS, TrainingRow)
    assert sorted((r.item_id, r.kind) for r in rows) == [("x", "rationale"), ("y", "answer"), ("z", "rationale")]
    unticked = read_jsonl(new / EXPORT_UNTICKED, TrainingRow)
    assert sorted(r.item_id for r in unticked) == ["x", "y"]
    pairs = [json.loads(line) for line in (new / EXPORT_PAIRS).read_text().splitlines()]
    assert sorted(p["item_id"] for p in pairs) == ["x"]
    carried = [r.image for r in rows + unticked if r.item_id != "z"] + [i for p in pairs for i in p["images"]]
    for image in carried:
        assert image.startswith(f"{EXPORT_IMAGES}/") and (new / image).is_file()
        # shared with the previous export (hard link), not a copy
        assert os.path.samestat((new / image).stat(), (previous / image).stat())


def test_a_reused_image_that_is_a_symlink_out_of_the_previous_export_is_fetched_afresh(previous, tmp_path):
    """The same task exported again: its earlier copy (looked up by the source's hash) became a symlink
    to the secret, so the image is fetched from its source instead of linked."""
    secret = tmp_path / "secret.txt"
    (row,) = [r for r in read_jsonl(previous / EXPORT_ROWS, TrainingRow) if r.item_id == "x"]
    earlier = previous / row.image
    earlier.unlink()
    earlier.symlink_to(secret)
    convert([task("x", ["r0 is red.", "r1 is blue."], (["c0"], False))], tmp_path / "e1",
            ExportOptions(previous=previous, iteration=1))
    (again,) = [r for r in read_jsonl(tmp_path / "e1" / EXPORT_ROWS, TrainingRow) if r.item_id == "x"]
    image = tmp_path / "e1" / again.image
    assert not image.is_symlink() and image.read_bytes().startswith(b"\x89PNG")
    assert secret.stat().st_nlink == 1


def test_a_symlinked_images_folder_of_the_previous_export_carries_nothing(previous, tmp_path):
    (previous / EXPORT_IMAGES).rename(tmp_path / "elsewhere")
    (previous / EXPORT_IMAGES).symlink_to(tmp_path / "elsewhere")
    manifest = next_export(previous, tmp_path / "e1")
    assert {entry["item_id"] for entry in manifest["refused_images"]} == {"x", "y"}
    assert [r.item_id for r in read_jsonl(tmp_path / "e1" / EXPORT_ROWS, TrainingRow)] == ["z"]
