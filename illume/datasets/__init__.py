"""Read items from any supported source: `read_items(path)`.

- `*.json`: VQA-X (either layout)
- `*.jsonl`: generic rows (also Shapes-X splits and `Item` records written by this project)
- `*.csv`: generic rows
- a folder: its sidecar file (items.jsonl, items.csv or a single *.jsonl/*.csv) next to the images
"""
from __future__ import annotations

from pathlib import Path

from illume.datasets.tabular import check_unique, read_csv_items, read_jsonl_items
from illume.datasets.vqax import read_vqax
from illume.errors import IllumeError
from illume.records import Item

SIDECARS = ("items.jsonl", "items.csv")


def _sidecar(folder: Path) -> Path:
    for name in SIDECARS:
        if (folder / name).is_file():
            return folder / name
    candidates = sorted([*folder.glob("*.jsonl"), *folder.glob("*.csv")])
    if len(candidates) == 1:
        return candidates[0]
    raise IllumeError(f"{folder}: found {len(candidates)} sidecar files, expected one",
                      f"Put the rows in {folder / SIDECARS[0]} (image paths relative to the folder).")


def read_items(path: str | Path, image_root: str | Path | None = None) -> list[Item]:
    path = Path(path)
    if not path.exists():
        raise IllumeError(f"{path} does not exist", "Pass a VQA-X .json, a .jsonl or .csv file, or a folder of images with a sidecar file.")
    if path.is_dir():
        path = _sidecar(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        items = read_vqax(path, image_root=image_root)
    elif suffix == ".jsonl":
        items = read_jsonl_items(path)
    elif suffix == ".csv":
        items = read_csv_items(path)
    else:
        raise IllumeError(f"{path}: unknown format {suffix!r}", "Use .json (VQA-X), .jsonl or .csv.")
    check_unique(items, path)
    return items


__all__ = ["read_items", "read_vqax", "Item"]
