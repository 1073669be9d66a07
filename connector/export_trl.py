"""An export's data in TRL's other layouts, readable by `datasets` and TRL's trainers as they are.

preferences.jsonl already is TRL's (vision) preference layout. Beside it, from the same export:
  * sft.jsonl, prompt-completion (SFTTrainer): every row of rows.jsonl; the completion is the answer
    alone for an answer-only row, "{answer}, seeing that {rationale}" for a rationale row (the turn
    our trainer learns, and preferences.jsonl's chosen/rejected form);
  * unpaired.jsonl, unpaired preference (KTOTrainer): the accepted rationale rows with label true,
    the candidates nobody ticked (unticked.jsonl) with label false.
Each line has `images` (paths relative to the export, as in preferences.jsonl), a conversational
`prompt` (the user's turn: the image and the question) and `completion`, plus our item_id.

`push_to_hub` uploads the three layouts as configs of one dataset repository, only when asked.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connector.export_images import file_in_export
from illume.errors import IllumeError
from illume.prompts import rationale_reply
from illume.records import (RATIONALE, TrainingRow, assistant_turn, atomic_write_text, iter_json_objects,
                            iter_jsonl, user_turn)
from illume.layout import EXPORT_IMAGES, EXPORT_PAIRS, EXPORT_ROWS, EXPORT_TRL_SFT, EXPORT_TRL_UNPAIRED, EXPORT_UNTICKED

HUB_CONFIGS = {"sft": EXPORT_TRL_SFT, "unpaired": EXPORT_TRL_UNPAIRED, "preference": EXPORT_PAIRS}  # config name -> file


def completion_text(row: TrainingRow) -> str:
    return rationale_reply(row.answer, row.rationale) if row.kind == RATIONALE and row.rationale else row.answer


def sft_record(row: TrainingRow) -> dict[str, Any]:
    return {"item_id": row.item_id, "images": [row.image], "prompt": user_turn(row.question),
            "completion": assistant_turn(completion_text(row))}


def unpaired_record(row: TrainingRow, desirable: bool) -> dict[str, Any]:
    return {**sft_record(row), "label": desirable}


def _write(path: Path, records: Iterable[dict[str, Any]]) -> int:
    lines = [json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n" for record in records]
    atomic_write_text(path, "".join(lines))
    return len(lines)


def write_trl_layouts(export: Path) -> dict[str, int]:
    """Write sft.jsonl and unpaired.jsonl into the export directory; their line counts."""
    export = Path(export)
    rows_path, unticked_path = export / EXPORT_ROWS, export / EXPORT_UNTICKED
    if not rows_path.is_file():
        raise IllumeError(f"{export} is not an export directory (no {EXPORT_ROWS})",
                          "Pass the directory `illume-sync export --out DIR` wrote.")
    if not unticked_path.is_file():
        raise IllumeError(f"{export} has no {EXPORT_UNTICKED} (written by exports since the unpaired layout)",
                          "Export again with this version of `illume-sync export`, then convert.")
    rows = list(iter_jsonl(rows_path, TrainingRow))
    unticked = list(iter_jsonl(unticked_path, TrainingRow))
    return {"sft": _write(export / EXPORT_TRL_SFT, map(sft_record, rows)),
            "unpaired": _write(export / EXPORT_TRL_UNPAIRED,
                               [unpaired_record(r, True) for r in rows if r.kind == RATIONALE]
                               + [unpaired_record(r, False) for r in unticked])}


@dataclass
class HubPlan:
    repo: str
    configs: dict[str, int]  # config name -> rows
    images: int  # distinct image files uploaded with them
    pushed: bool


REWRITE = "Write the layouts again with `illume-sync export-trl` (or re-export), then push."


def _lines(export: Path, path: Path) -> list[dict[str, Any]]:
    """The file's records, each `images` as files inside the export's images/ folder: the dataset
    embeds the files it names, so a path leading elsewhere ("../", absolute) must never reach it."""
    root = export.resolve()
    return [{**record, "images": _images(root, record.get("images"), f"{path}, line {number}")}
            for number, record in iter_json_objects(path, REWRITE)]


def _images(root: Path, images: Any, where: str) -> list[str]:
    """The resolved files `images` (paths relative to the export) names; IllumeError for any other."""
    if not isinstance(images, list):
        raise IllumeError(f"{where}: \"images\" must be a list of image paths, got {type(images).__name__}", REWRITE)
    return [str(_image_file(root, image, where)) for image in images]


def _image_file(root: Path, image: Any, where: str) -> Path:
    path = file_in_export(root, image)
    if path is None:
        raise IllumeError(f"{where}: image {str(image)[:200]!r} is not a file inside the export's "
                          f"{EXPORT_IMAGES}/ folder ({root / EXPORT_IMAGES}); it would be uploaded with the dataset",
                          f"Name images relative to the export, under {EXPORT_IMAGES}/, as `illume-sync export` "
                          f"writes them. {REWRITE}")
    return path


def push_to_hub(export: Path, repo: str, dry_run: bool = False, private: bool = True) -> HubPlan:
    """Upload the layouts (images embedded) as configs of the dataset `repo`; with dry_run, only
    what would be uploaded (nothing is imported from the hub, nothing leaves the machine)."""
    export = Path(export)
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise IllumeError(f"--push-to-hub needs a dataset repository as OWNER/NAME, got {repo!r}",
                          "Pass e.g. --push-to-hub my-team/illume-feedback.")
    present = {name: export / file for name, file in HUB_CONFIGS.items() if (export / file).is_file()}
    records = {name: _lines(export, path) for name, path in present.items()}
    images = {image for lines in records.values() for line in lines for image in line["images"]}
    plan = HubPlan(repo, {name: len(lines) for name, lines in records.items()}, len(images), pushed=False)
    if dry_run:
        return plan
    import datasets

    for name, lines in records.items():
        if not lines:
            continue
        dataset = datasets.Dataset.from_list(lines)  # images: files checked to be in the export's images/
        dataset = dataset.cast_column("images", datasets.Sequence(datasets.Image()))
        dataset.push_to_hub(repo, config_name=name, private=private)
    plan.pushed = True
    return plan
