"""Label Studio tasks <-> model queries: which data fields to read (named by the labeling
config), candidate aliases, prediction results, and writing candidates back into tasks."""
from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

from illume.errors import IllumeError
from illume.images import ImagePolicy, LabelStudioAuth, load_image
from illume.records import Candidate
from illume.vlm import Query, normalise


@dataclass(frozen=True)
class ConfigFields:
    """Task data keys and control names, as the labeling config names them."""

    image: str = "image"
    question: str = "question"
    answer: str = "answer"
    candidates: str = "candidates"
    from_name: str = "rationales"
    to_name: str = "image"


def _variable(value: str | None) -> str | None:
    return value[1:] if value and value.startswith("$") else None


@lru_cache(maxsize=64)
def parse_label_config(xml: str | None) -> ConfigFields:
    """Find the image, question, answer and candidate fields of a labeling config.

    The image is the first <Image>; question and answer are the tags named "question" and
    "answer"; the candidates are the <Choices> whose options come from task data (value="$...").
    Anything the config does not name keeps its default.
    """
    if not xml or not xml.strip():
        return ConfigFields()
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise IllumeError(f"the labeling config is not valid XML ({exc})",
                          "Use label_config/illume_rationales.xml as the project's labeling config.") from exc
    found: dict[str, str] = {}
    for element in root.iter():
        variable = _variable(element.get("value"))
        name = element.get("name")
        if element.tag == "Image" and variable and "image" not in found:
            found["image"], found["to_name"] = variable, name or "image"
        elif name in ("question", "answer") and variable:
            found[name] = variable
        elif element.tag == "Choices" and variable and "candidates" not in found:
            found["candidates"], found["from_name"] = variable, name or "rationales"
            found["choices_to_name"] = element.get("toName") or ""
    to_name = found.pop("choices_to_name", "") or found.get("to_name", "image")
    return ConfigFields(**{**found, "to_name": to_name})


def task_query(task: dict[str, Any], fields: ConfigFields, policy: ImagePolicy) -> Query:
    """The model query for one task; an IllumeError says which field is missing or bad."""
    data = task.get("data")
    if not isinstance(data, dict):
        raise IllumeError(f"task {task.get('id')} has no data", "Import tasks with a data object.")
    values = {}
    for key in (fields.image, fields.question, fields.answer):
        value = data.get(key)
        if not isinstance(value, str) or not value.strip():
            raise IllumeError(f"task {task.get('id')}: field {key!r} is missing or empty",
                              f"Import tasks whose data has {fields.image!r}, {fields.question!r} and {fields.answer!r}.")
        values[key] = value.strip()
    image = load_image(values[fields.image], policy)
    return Query(image=image, question=values[fields.question], answer=values[fields.answer])


_ALIAS = re.compile(r"^c(\d+)$")


def assign_aliases(texts: Sequence[str], existing: Any) -> list[dict[str, str]]:
    """Candidate options with stable aliases.

    A text already offered in this task keeps its alias; a new text gets an index never used
    in this task before, so an alias in an earlier annotation always means one text.
    """
    known: dict[str, str] = {}
    used = -1
    for option in existing if isinstance(existing, list) else []:
        if isinstance(option, dict) and isinstance(option.get("alias"), str):
            known.setdefault(normalise(str(option.get("value", ""))), option["alias"])
            if match := _ALIAS.match(option["alias"]):
                used = max(used, int(match.group(1)))
    options = []
    for text in texts:
        alias = known.get(normalise(text))
        if alias is None:
            used += 1
            alias = f"c{used}"
        options.append({"value": text, "alias": alias})
    return options


def prediction(options: list[dict[str, str]], candidates: Sequence[Candidate], fields: ConfigFields,
               version: str, preselect: int) -> dict[str, Any]:
    """The prediction for one task: pre-ticks the `preselect` best-scored candidates (options are
    in score order; 0 pre-ticks none). Its score is the best candidate's probability, so Label
    Studio's uncertainty sampling offers the tasks the model is least sure of first."""
    if not options:
        return empty_prediction(version)
    ticked = [option["alias"] for option in options[:max(0, preselect)]]
    result = [{"from_name": fields.from_name, "to_name": fields.to_name, "type": "choices",
               "value": {"choices": ticked}}] if ticked else []
    return {"result": result, "score": round(math.exp(max(c.score for c in candidates)), 6),
            "model_version": version}


def empty_prediction(version: str) -> dict[str, Any]:
    return {"result": [], "score": 0.0, "model_version": version}


def write_candidates(auth: LabelStudioAuth, task: dict[str, Any], fields: ConfigFields,
                     candidates: Sequence[Candidate]) -> list[dict[str, str]]:
    """Store the candidates in the task's data and return them as options.

    The data comes from the /predict payload: reading the task back through GET /api/tasks/<id>
    would make Label Studio call /predict again for a task without predictions (recursion).
    """
    data = dict(task.get("data") or {})
    options = assign_aliases([c.text for c in candidates], data.get(fields.candidates))
    data[fields.candidates] = options
    response = auth.request("PATCH", f"/api/tasks/{int(task['id'])}/", json={"data": data})
    if response.status_code != 200:
        raise IllumeError(f"task {task['id']}: Label Studio refused the candidates (HTTP {response.status_code}: "
                          f"{response.text[:200]})",
                          "Check that LABEL_STUDIO_API_KEY belongs to a user who may edit the project's tasks.")
    return options
