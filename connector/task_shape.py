"""Is an exported task shaped as Label Studio writes it? Checked before a task is judged.

Label Studio's own exports always are; a task edited by hand, by a script or by another tool
may not be (an annotation without an id, a question that is a list, choices that are a string).
Such a task is left out of the export and reported in the manifest ("refused_tasks"), with what
is wrong, instead of stopping the export or turning into training text ("None", "['a', 'b']").
"""
from __future__ import annotations

from typing import Any

from illume.errors import IllumeError
from illume.labeling_schema import LabelingSchema

FIX_TASK = ("Fix the task in Label Studio (or in the exported file), or delete it; tasks written by other "
            "tools must use Label Studio's task format.")


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def task_problem(task: Any, schema: LabelingSchema) -> str | None:
    """What makes `task` unreadable (None when nothing does): the first problem found."""
    if not isinstance(task, dict):
        return f"the task is a {_kind(task)}, not a JSON object"
    if not _is_id(task.get("id")):
        return f"the task's id is {_kind(task.get('id'))}, not a number"
    data = task.get("data")
    if not isinstance(data, dict):
        return f"task {task['id']}: its data is a {_kind(data)}, not a JSON object"
    for role, key in (("image", schema.image), ("question", schema.question), ("answer", schema.answer),
                      ("item id", "item_id")):
        value = data.get(key)
        if value is not None and not isinstance(value, str) and not (key == "item_id" and _is_id(value)):
            return f"task {task['id']}: its {role} (data.{key}) is a {_kind(value)}, not text"
    options = data.get(schema.candidates)
    if options is not None and not (isinstance(options, list) and all(_is_option(o) for o in options)):
        return f"task {task['id']}: its candidates (data.{schema.candidates}) are not a list of options"
    return _annotations_problem(task, schema)


def _is_option(option: Any) -> bool:
    """A candidate as the backend stores it ({"value", "alias"}), or a plain text from an early import."""
    if isinstance(option, str):
        return True
    return (isinstance(option, dict) and isinstance(option.get("value", ""), str)
            and (option.get("alias") is None or isinstance(option["alias"], (str, int))))


def _annotations_problem(task: dict, schema: LabelingSchema) -> str | None:
    annotations = task.get("annotations")
    if annotations is None:
        return None
    if not isinstance(annotations, list):
        return f"task {task['id']}: its annotations are a {_kind(annotations)}, not a list"
    for number, annotation in enumerate(annotations, start=1):
        where = f"task {task['id']}, annotation {number}"
        if not isinstance(annotation, dict):
            return f"{where}: a {_kind(annotation)}, not a JSON object"
        if not _is_id(annotation.get("id")):
            return f"{where}: its id is {_kind(annotation.get('id'))}, not a number"
        who = annotation.get("completed_by")
        if not (who is None or _is_id(who) or (isinstance(who, dict) and _is_id(who.get("id")))):
            return f"{where}: its completed_by is a {_kind(who)}, not a user id"
        results = annotation.get("result")
        if results is not None and not isinstance(results, list):
            return f"{where}: its result is a {_kind(results)}, not a list"
        try:
            for result in results or []:
                schema.read(result)
        except IllumeError as exc:
            return f"{where}: {exc.what}"
    return None
