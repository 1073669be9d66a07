"""Local image paths (illume.images): the file checked against the allowed roots is the file read,
even when a writer inside a root swaps names for symlinks between the check and the read, and every
refusal is an IllumeError that shows a bounded prefix of the path."""
from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image

from illume.errors import IllumeError
from illume.images import ImagePolicy, check_image

SECRET = b"SECRET-OUTSIDE-THE-ROOT"


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 3), "red").save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def layout(tmp_path) -> tuple[Path, Path]:
    """An allowed root holding d/img.png, and an outside folder holding a secret img.png."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "d").mkdir(parents=True)
    outside.mkdir()
    (root / "d" / "img.png").write_bytes(png())
    (outside / "img.png").write_bytes(SECRET)
    return root, outside


def fetch(ref: str, root: Path, **limits) -> bytes:
    return check_image(ref, ImagePolicy(allowed_roots=[root], **limits)).fetch()


def swap_after_resolve(monkeypatch, target: Path, swap) -> None:
    """Run `swap` once, right after `target` is resolved (and checked): the race, made deterministic."""
    resolve, done = Path.resolve, []

    def resolve_then_swap(self, *args, **kwargs):
        resolved = resolve(self, *args, **kwargs)
        if resolved == target and not done:
            done.append(swap())
        return resolved
    monkeypatch.setattr(Path, "resolve", resolve_then_swap)


def test_file_swapped_for_a_symlink_after_the_check_is_not_read(layout, monkeypatch):
    root, outside = layout
    target = root / "d" / "img.png"

    def swap():
        target.unlink()
        target.symlink_to(outside / "img.png")
    swap_after_resolve(monkeypatch, target, swap)
    with pytest.raises(IllumeError, match="symlink|outside the allowed roots"):
        assert fetch(str(target), root) != SECRET


def test_folder_swapped_for_a_symlink_after_the_check_is_not_read(layout, monkeypatch):
    root, outside = layout
    target = root / "d" / "img.png"

    def swap():
        (root / "d").rename(root / "d.old")
        (root / "d").symlink_to(outside)
    swap_after_resolve(monkeypatch, target, swap)
    with pytest.raises(IllumeError, match="outside the allowed roots"):
        assert fetch("d/img.png", root) != SECRET


def test_parent_symlinked_outside_is_refused(layout):
    root, outside = layout
    (root / "out").symlink_to(outside)
    with pytest.raises(IllumeError, match="outside the allowed roots"):
        fetch(str(root / "out" / "img.png"), root)


@pytest.mark.timeout(30)
def test_fifo_is_refused_without_blocking(layout, monkeypatch):
    root, _ = layout
    os.mkfifo(root / "pipe.png")
    with pytest.raises(IllumeError, match="not a regular file"):
        fetch(str(root / "pipe.png"), root)
    target = root / "d" / "img.png"  # a FIFO swapped in after the check: opening it must not wait for a writer

    def swap():
        target.unlink()
        os.mkfifo(target)
    swap_after_resolve(monkeypatch, target, swap)
    with pytest.raises(IllumeError, match="not a regular file"):
        fetch(str(target), root)


def test_file_growing_after_its_size_is_checked_is_refused(layout, monkeypatch):
    root, _ = layout
    target = root / "d" / "img.png"
    limit, fstat = len(png()) + 10, os.fstat

    def fstat_then_grow(fd):
        info = fstat(fd)
        if info.st_ino == target.stat().st_ino:
            with target.open("ab") as handle:
                handle.write(b"\0" * 1000)
        return info
    monkeypatch.setattr(os, "fstat", fstat_then_grow)
    with pytest.raises(IllumeError, match=f"over the limit of {limit}"):
        fetch(str(target), root, max_bytes=limit)


def test_local_file_reads_when_nothing_changes(layout):
    root, _ = layout
    assert fetch(str(root / "d" / "img.png"), root) == png()
    assert fetch("d/img.png", root) == png()
    assert fetch(f"file://localhost{root}/d/img.png", root) == png()
    assert fetch(f"FILE://{root}/d/img.png", root) == png()


def test_without_proc_the_read_is_refused(layout, monkeypatch):
    root, _ = layout

    def no_proc(path, *args, **kwargs):
        raise FileNotFoundError(2, "No such file or directory", path)
    monkeypatch.setattr(os, "readlink", no_proc)
    with pytest.raises(IllumeError, match="cannot tell which file"):
        fetch(str(root / "d" / "img.png"), root)


def test_tilde_is_a_literal_name_under_the_root(layout):
    root, _ = layout
    (root / "~").mkdir()
    (root / "~" / "x.png").write_bytes(png())
    assert fetch("~/x.png", root) == png()
    with pytest.raises(IllumeError, match="does not exist"):
        fetch("~nosuchuser/x.png", root)


@pytest.mark.parametrize("ref, why", [
    ("file://{root}/d/img.png%00.png", "control characters"),
    ("{root}/d/img.png\x00", "control characters"),
    ("file://{root}/d%0a/img.png", "control characters"),
    ("file://evil.example{root}/d/img.png", "host 'evil.example'"),
    ("file://localhost:99{root}/d/img.png", "host 'localhost:99'"),
    ("{root}/" + "a" * 300 + ".png", "name too long"),
    ("a" * 300 + "/x.png", "name too long"),
    ("{root}/loop.png", "symlink loop|too many levels"),
    ("{root}/d", "not a regular file"),
])
def test_unreadable_local_paths_are_illume_errors(layout, ref, why):
    root, _ = layout
    (root / "loop.png").symlink_to(root / "loop.png")
    with pytest.raises(IllumeError, match=why) as caught:
        fetch(ref.format(root=root), root)
    assert "a" * 201 not in str(caught.value)  # a bounded prefix of the path, not all of it
