"""Gold tasks: items whose reference explanations score the people who judge them.

Every imported item carries reference explanations (task meta), so any task can be gold. A
share of the items is chosen by a fixed rule: an item is gold when the first 8 bytes of
sha256(item_id), read as a fraction of 2**64, fall below the share. The rule needs no state,
so the same items are gold in every labeling round and a re-run marks the same ones.

A gold task is flagged in its `meta` ({"gold": true, "gold_share": S}), out of the annotators'
view like the references: it sits in the queue like any other task, so each annotator meets
gold tasks at about the share of the tasks they judge, without knowing which. (Label Studio's
per-task overlap is not used to send gold to everyone: it rearranges task overlaps itself
whenever the project's overlap changes.) An annotator's judgement of a gold task is scored
against what the reference-based critic accepts (connector.annotator_quality).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable

from illume.errors import IllumeError
from illume.labelstudio.client import LabelStudioClient

GOLD = "gold"
GOLD_SHARE = "gold_share"


def check_share(share: float) -> float:
    if not 0.0 <= share <= 1.0:
        raise IllumeError(f"--gold-share must be between 0 and 1, got {share}",
                          "Pass the share of tasks that are gold, e.g. 0.1.")
    return float(share)


def is_gold_item(item_id: str, share: float) -> bool:
    """The fixed rule: the same items are gold for a given share, in every round (see the module doc)."""
    digest = hashlib.sha256(str(item_id).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64 < share


def is_gold(task: dict) -> bool:
    meta = task.get("meta")
    return isinstance(meta, dict) and meta.get(GOLD) is True


def recorded_share(task: dict) -> float | None:
    """The gold share a task's meta records (a gold task records the share that chose it)."""
    meta = task.get("meta")
    value = meta.get(GOLD_SHARE) if isinstance(meta, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def gold_meta(meta: dict | None, item_id: str, share: float) -> dict:
    """A task's meta with the gold flag as the rule says (the share recorded on gold tasks)."""
    meta = {k: v for k, v in (meta or {}).items() if k not in (GOLD, GOLD_SHARE)}
    if is_gold_item(item_id, share):
        meta.update({GOLD: True, GOLD_SHARE: share})
    return meta


@dataclass
class GoldMarking:
    tasks: int = 0
    gold: int = 0
    changed: int = 0


def mark_gold_tasks(client: LabelStudioClient, project_id: int, share: float,
                    progress: Callable[[int], None] | None = None) -> GoldMarking:
    """Flag the share of the project's tasks that the rule chooses (unflag the others); only tasks
    whose flag changes are written. Safe to run again."""
    check_share(share)
    result = GoldMarking()
    for task in client.pages("/api/tasks", {"project": project_id, "fields": "all"}, page_size=500):
        if progress:
            progress(1)
        result.tasks += 1
        data: dict[str, Any] = task.get("data") or {}
        item_id = str(data.get("item_id") or f"task-{task.get('id')}")
        meta = task.get("meta") if isinstance(task.get("meta"), dict) else {}
        wanted = gold_meta(meta, item_id, share)
        result.gold += wanted.get(GOLD) is True
        if wanted != meta:
            client.request("PATCH", f"/api/tasks/{task['id']}", json={"meta": wanted})
            result.changed += 1
    return result
