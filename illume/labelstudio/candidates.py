"""The task contract for candidates: how a task's `data.candidates` is read and written.

Used by every writer of candidates (the ML backend's /predict, offline sampling), so they all
keep one rule: an alias always means one text in a task, and once a task has an annotation
(cancelled ones included) or a draft, its options are append-only. A new model version then
adds its candidates (new texts get new aliases) and keeps the old ones, so every annotation
still resolves to the text it ticked.

Label Studio shows the options in the order of `data.candidates`. That order is a per-task
shuffle (`display_order`: a hash of the task id and each text), never the score order, so the
model's favourite is not always on top (position bias); the score still orders the tasks
(the prediction's score). The current version's options come first (shuffled among themselves),
then the earlier ones a judged task keeps, word for word and in their stored order. The same
texts always give the same order, so a re-predict, a retry, a reload or a restart of one
version never moves an option; and positions never matter to an annotation: it refers to aliases.

A person can ask for fresh candidates for a task (`illume-sync resample`): the request is the
task's `meta.candidates_resample`; the next write honours it by appending the new texts (even
to a task nobody judged yet, never duplicating a text already offered) and clears it.

Options appended to a judged task are recorded in the task's `meta` (never shown to annotators):
`meta.candidates_appended = {alias: id of the task's newest annotation then}`, so the export
judges each annotation only against the options it could have seen (`unseen_aliases`).
Options a new version's write takes off an unjudged task are kept in `meta.candidates_retired =
{alias: text}`: a person whose page still showed them may tick one, and that tick still means its
text (`retired_options`); their aliases are never given to another text.

`client` is anything with the connector client's `request(method, path, expect=, params=,
json=)` (illume.labelstudio.client.LabelStudioClient); this module imports nothing from the connector.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

from illume.errors import IllumeError
from illume.labeling_schema import LabelingSchema
from illume.records import Candidate
from illume.text import normalise

_ALIAS = re.compile(r"^c(\d+)$")
APPENDED = "candidates_appended"  # task meta key: alias -> newest annotation id when it was appended
RETIRED = "candidates_retired"  # task meta key: alias -> text of options a rewrite took off an unjudged task
RESAMPLE = "candidates_resample"  # task meta key: a person asked for fresh candidates (append, then cleared)
_LIST_CHUNK = 100  # task ids per export request (keeps the query string short)


class TaskClient(Protocol):
    def request(self, method: str, path: str, expect: tuple[int, ...] = ..., params: Any = None,
                json: Any = None, timeout: float | None = None) -> Any: ...


@dataclass(frozen=True)
class StoredTask:
    """A task's data as Label Studio holds it, and whether anybody has judged it yet."""

    data: dict[str, Any]
    judged: bool  # an annotation (even a cancelled one) or a draft exists: options are append-only
    project: int | None = None  # where to read it again (None: never re-read)
    meta: dict[str, Any] | None = None
    newest_annotation: int = 0  # the highest annotation id (0: none)

    @property
    def resample_requested(self) -> bool:
        return bool((self.meta or {}).get(RESAMPLE))


@dataclass(frozen=True)
class Option:
    """One candidate option of a task: its text (whitespace collapsed) and the choice value an
    annotation stores for it (its alias; the stored text for options kept without one)."""

    text: str
    alias: str


def task_options(data: dict[str, Any], fields: LabelingSchema) -> list[Option]:
    """The options of a task's `data.candidates` in stored order: the one reader of that list
    ([{"value", "alias"}]; plain strings from early imports are options without an alias).
    Options without text are left out."""
    found = []
    for entry in data.get(fields.candidates) or []:
        value = entry.get("value", "") if isinstance(entry, dict) else entry
        alias = entry.get("alias") if isinstance(entry, dict) else None
        text = " ".join(str(value).split())
        if text:
            found.append(Option(text, str(alias) if alias is not None else str(value)))
    return found


def retired_options(meta: Any) -> dict[str, str]:
    """{alias: text} of the options rewrites took off the task while nobody had judged it."""
    retired = meta.get(RETIRED) if isinstance(meta, dict) else None
    return {a: t for a, t in retired.items() if isinstance(a, str) and isinstance(t, str)} \
        if isinstance(retired, dict) else {}


def assign_aliases(texts: Sequence[str], existing: Any, retired: dict[str, str] | None = None) -> list[dict[str, str]]:
    """Options for `texts` with stable aliases.

    A text already offered in this task (or taken off it: `retired`) keeps its alias; a new text
    gets an index above every alias the task ever had, so an alias in any annotation, even one
    made on a page showing options since taken off, always means one text.
    """
    known: dict[str, str] = {}
    used = -1
    offered = [option for option in existing if isinstance(option, dict)] if isinstance(existing, list) else []
    offered += [{"value": text, "alias": alias} for alias, text in (retired or {}).items()]
    for option in offered:
        if isinstance(option.get("alias"), str):
            known.setdefault(normalise(str(option.get("value", ""))), option["alias"])
            if match := _ALIAS.match(option["alias"]):
                used = max(used, int(match.group(1)))
    options, taken = [], set()
    for text in texts:
        alias = known.get(normalise(text))
        if alias is None or alias in taken:  # two texts the same once normalised: one alias each
            used += 1
            alias = f"c{used}"
        taken.add(alias)
        options.append({"value": text, "alias": alias})
    return options


def display_order(options: Sequence[dict[str, str]], order_key: str) -> list[dict[str, str]]:
    """The options in the order annotators see them: shuffled per task, the same every time.

    Each text's place follows a hash of `order_key` (the task) and the text (whitespace and case
    collapsed), so the same texts come out in the same order whatever their scores or the run.
    """
    def rank(option: dict[str, str]) -> str:
        return hashlib.sha256(f"{order_key}\n{normalise(option['value'])}".encode()).hexdigest()

    return sorted(options, key=rank)


def merge_options(texts: Sequence[str], existing: Any, judged: bool, order_key: str,
                  retired: dict[str, str] | None = None) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(options to store in display order, the current version's options in the order of `texts`).

    Unjudged tasks get the current options only, shuffled (display_order). Judged ones (and tasks
    whose candidates were asked for again) keep every earlier option in its stored wording (an
    annotation's text never changes, not even its case), after the current ones (shuffled).
    """
    current = assign_aliases(texts, existing, retired)
    if not judged:
        return display_order(current, order_key), current
    earlier = [option for option in existing or [] if isinstance(option, dict) and isinstance(option.get("alias"), str)]
    stored = {option["alias"]: option for option in earlier}
    current = [stored.get(option["alias"], option) for option in current]
    offered = {option["alias"] for option in current}
    return display_order(current, order_key) + [o for o in earlier if o["alias"] not in offered], current


def stored_tasks(client: TaskClient, project: int, task_ids: Sequence[int]) -> dict[int, StoredTask]:
    """What Label Studio holds for those tasks of `project` (tasks of other projects are absent).

    Read through the project's export (one call per 100 ids, filtered by project and ids): GET
    /api/tasks/<id> would make Label Studio call /predict again for a task without predictions
    (recursion). The export lists annotations (cancelled ones too) and drafts.
    """
    found: dict[int, StoredTask] = {}
    for start in range(0, len(task_ids), _LIST_CHUNK):
        response = client.request("GET", f"/api/projects/{project}/export", expect=(200, 400, 403, 404),
                                  params={"exportType": "JSON", "download_all_tasks": "true",
                                          "ids[]": [str(i) for i in task_ids[start:start + _LIST_CHUNK]]})
        if response.status_code != 200:
            raise IllumeError(f"Label Studio refused to list the tasks of project {project} "
                              f"(HTTP {response.status_code}: {response.text[:200]})",
                              "Check that LABEL_STUDIO_API_KEY belongs to a user who may read the project's tasks.")
        try:
            listed = response.json()
        except ValueError:  # a proxy's page: no task can be written, and none is misread
            raise IllumeError(f"Label Studio answered the task listing of project {project} with no JSON",
                              "Check that the backend's LABEL_STUDIO_URL is Label Studio's own address.") from None
        for task in listed if isinstance(listed, list) else []:
            if isinstance(task, dict) and _whole(task.get("id")) is not None:
                annotations = [a for a in task.get("annotations") or [] if isinstance(a, dict)]
                judged = bool(annotations or task.get("drafts"))
                newest = max((_whole(a.get("id")) or 0 for a in annotations), default=0)
                meta = task.get("meta") if isinstance(task.get("meta"), dict) else {}
                data = task.get("data") if isinstance(task.get("data"), dict) else {}
                found[_whole(task["id"])] = StoredTask(data, judged, project, meta, newest)
    return found


def _whole(value: Any) -> int | None:
    """An id as Label Studio writes it (a number, or its digits), else None: a task with another id
    is not one this request can write to, and must not fail the others."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return int(value) if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 19 else None


def write_candidates(client: TaskClient, task_id: int, stored: StoredTask, fields: LabelingSchema,
                     candidates: Sequence[Candidate]) -> list[dict[str, str]]:
    """Store the candidates in the task's data (only that field changes); the current options.

    `stored` is the task as Label Studio holds it (stored_tasks), never a /predict payload, so a
    payload cannot change any other field. When the task was unjudged and the write dropped
    options, it is read again: an annotation saved meanwhile gets its options back.
    """
    existing, texts = stored.data.get(fields.candidates), [c.text for c in candidates]
    retired = retired_options(stored.meta)
    options, current = merge_options(texts, existing, stored.judged or stored.resample_requested, order_key(task_id),
                                     retired)
    _patch_candidates(client, task_id, stored, fields, options)
    written = {option["alias"] for option in options}
    dropped = [o for o in existing or [] if isinstance(o, dict) and o.get("alias") not in written]
    if dropped and stored.project is not None:
        again = stored_tasks(client, stored.project, [task_id]).get(task_id)
        if again is not None and again.judged:  # judged between our read and our write: what it saw is kept
            # (as it stood before our write, so only what is new to it counts as appended after it)
            restored = StoredTask({**again.data, fields.candidates: existing}, True, again.project, again.meta,
                                  again.newest_annotation)
            kept, _ = merge_options(texts, existing, True, order_key(task_id), retired)
            _patch_candidates(client, task_id, restored, fields, kept)
    return current


def order_key(task_id: int) -> str:
    """What a task's display order is drawn from (display_order)."""
    return f"task {task_id}"


def request_resample(client: TaskClient, task_id: int, stored: StoredTask) -> None:
    """Ask for fresh candidates for this task: the next write appends them (write_candidates)."""
    _patch(client, task_id, {"meta": {**(stored.meta or {}), RESAMPLE: True}}, "the request for new candidates")


def unseen_aliases(task: dict[str, Any], annotation: dict[str, Any]) -> set[str]:
    """Aliases appended to the task after this annotation was made (it could not tick them)."""
    meta = task.get("meta") if isinstance(task.get("meta"), dict) else {}
    appended = meta.get(APPENDED) if isinstance(meta.get(APPENDED), dict) else {}
    made = int(annotation.get("id") or 0)
    return {alias for alias, newest in appended.items() if isinstance(newest, int) and made <= newest}


def _patch_candidates(client: TaskClient, task_id: int, stored: StoredTask, fields: LabelingSchema,
                      options: list[dict[str, str]]) -> None:
    # The same body again is harmless, so this PATCH may be retried blindly (by the client).
    body: dict[str, Any] = {"data": {**stored.data, fields.candidates: options}}
    before = {o.get("alias") for o in stored.data.get(fields.candidates) or [] if isinstance(o, dict)}
    appended = [o["alias"] for o in options if o["alias"] not in before]
    meta = dict(stored.meta or {})
    if stored.judged and appended:  # remember which annotations could not have seen them
        meta[APPENDED] = {**(meta.get(APPENDED) or {}), **{alias: stored.newest_annotation for alias in appended}}
    written = {o["alias"] for o in options}
    taken_off = {o["alias"]: str(o.get("value", "")) for o in stored.data.get(fields.candidates) or []
                 if isinstance(o, dict) and isinstance(o.get("alias"), str) and o["alias"] not in written}
    retired = {a: t for a, t in {**retired_options(meta), **taken_off}.items() if a not in written}
    if retired or RETIRED in meta:
        meta[RETIRED] = retired
    meta.pop(RESAMPLE, None)  # a request for new candidates is answered by this write
    if meta != (stored.meta or {}):
        body["meta"] = meta
    _patch(client, task_id, body, "the candidates")


def _patch(client: TaskClient, task_id: int, body: dict[str, Any], what: str) -> None:
    response = client.request("PATCH", f"/api/tasks/{task_id}/", json=body, expect=(200, 400, 403, 404))
    if response.status_code != 200:
        raise IllumeError(f"task {task_id}: Label Studio refused {what} (HTTP {response.status_code}: "
                          f"{response.text[:200]})",
                          "Check that LABEL_STUDIO_API_KEY belongs to a user who may edit the project's tasks.")
