"""The labeling config, parsed once into what the method needs: which task fields hold the
image, question, answer and candidates, and which controls hold the ticks, "None of these is
correct" and a written rationale. Import, the ML backend, the simulated annotators and export
all read names from here, so any control or field names work.

Parsed with label-studio-sdk's LabelInterface:
  * the image: the first <Image> with a task-data value ($field);
  * the candidates: the <Choices> whose options come from task data (value="$field");
    the ticks are stored under its name, on the object its toName names;
  * question and answer: the <Text> objects named "question" and "answer", else the first
    and the second <Text> in the config;
  * "None of these is correct" (optional): another <Choices> with exactly one fixed choice;
    annotations store that choice's alias (or its value);
  * a written rationale (optional): the first <TextArea>.
A config lacking the image, the candidates, the question or the answer is refused with what
is missing and how to fix it.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from typing import Any

from illume.errors import IllumeError

# Package data (illume/label_config/), read through importlib.resources so it is found in any install.
SHIPPED_CONFIG = "illume_rationales.xml"
INSTRUCTIONS_NAME = "instructions.html"  # the instructions beside a labeling config, shown before labeling
MAX_CONFIG_CHARS = 200_000  # the shipped config is 3,000 characters; parsing 45 MB of XML took 1.3 GB


def shipped_text(name: str) -> str:
    """A file shipped in illume/label_config/ (SHIPPED_CONFIG, INSTRUCTIONS_NAME)."""
    return (files("illume") / "label_config" / name).read_text(encoding="utf-8")


@dataclass(frozen=True)
class LabelingSchema:
    image: str  # task data key of the image
    question: str
    answer: str
    candidates: str  # task data key of the candidate options ([{"value", "alias"}, ...])
    rationales: str  # the candidates' <Choices> name: the ticks' from_name
    to_name: str  # the object the ticks (and "None", and the text) annotate
    none_control: str | None = None
    none_choice: str | None = None  # what an annotation stores when "None" is chosen
    none_labels: tuple[str, ...] = ()  # every spelling of it (alias and value)
    written: str | None = None  # <TextArea> name

    # -- annotation results --------------------------------------------------------------------
    def ticks(self, choices: list[str]) -> dict[str, Any]:
        return {"from_name": self.rationales, "to_name": self.to_name, "type": "choices",
                "value": {"choices": list(choices)}}

    def none(self) -> dict[str, Any] | None:
        if self.none_control is None:
            return None
        return {"from_name": self.none_control, "to_name": self.to_name, "type": "choices",
                "value": {"choices": [self.none_choice]}}

    def text(self, text: str) -> dict[str, Any] | None:
        if self.written is None:
            return None
        return {"from_name": self.written, "to_name": self.to_name, "type": "textarea", "value": {"text": [text]}}

    def read(self, result: dict[str, Any]) -> tuple[str, list[str]]:
        """What one annotation result says: ("ticks", aliases), ("none", []), ("text", texts) or ("other", []).
        A result of one of our controls that is not shaped as Label Studio stores it (a value object
        holding a list of texts) is refused: read loosely, a string "c0" would be the ticks "c" and "0"."""
        if not isinstance(result, dict):
            raise _malformed(f"an annotation result is a {type(result).__name__}, not a JSON object")
        control = result.get("from_name")
        if control not in (self.rationales, self.none_control, self.written) or control is None:
            return "other", []
        value = result.get("value")
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise _malformed(f"the {control!r} result's value is a {type(value).__name__}, not a JSON object")
        if control == self.rationales:
            return "ticks", _texts(value, "choices", control)
        if control == self.none_control:
            chosen = set(_texts(value, "choices", control))
            return ("none", []) if chosen & set(self.none_labels) else ("other", [])
        return "text", _texts(value, "text", control)


def _malformed(what: str) -> IllumeError:
    return IllumeError(what, "Open the task in Label Studio and submit the annotation again (or delete it); "
                             "annotations written by other tools must use Label Studio's result format.")


def _texts(value: dict[str, Any], key: str, control: str) -> list[str]:
    texts = value.get(key)
    if texts is None:
        return []
    if not (isinstance(texts, list) and all(isinstance(t, str) for t in texts)):
        raise _malformed(f"the {control!r} result's {key} is not a list of texts ({type(texts).__name__})")
    return list(texts)


def _variable(value: Any) -> str | None:
    value = str(value or "")
    return value[1:] if value.startswith("$") and len(value) > 1 else None


def _refuse(what: str, todo: str, where: str) -> IllumeError:
    return IllumeError(f"The labeling config{where} {what}",
                       f"{todo} (illume/label_config/illume_rationales.xml shows a complete config).")


@lru_cache(maxsize=64)
def parse_schema(config: str, where: str = "") -> LabelingSchema:
    """The schema of one labeling config; `where` names it in errors (e.g. " of project 3")."""
    if not config or not config.strip():
        raise _refuse("is empty", "Set the project's labeling config", where)
    if len(config) > MAX_CONFIG_CHARS:
        raise _refuse(f"is {len(config):,} characters long, more than the {MAX_CONFIG_CHARS:,} read",
                      "Shorten it: a labeling config needs one image, two texts and the choices", where)
    from label_studio_sdk.label_interface import LabelInterface

    try:
        interface = LabelInterface(config)
    except Exception as exc:  # the SDK raises several types for malformed XML
        raise _refuse(f"cannot be read ({type(exc).__name__}: {exc})", "Fix the XML", where) from exc
    images = [o for o in interface.objects if o.tag == "Image" and _variable(o.value)]
    texts = [o for o in interface.objects if o.tag == "Text" and _variable(o.value)]
    controls = list(interface.controls)
    dynamic = [c for c in controls if c.tag == "Choices" and _variable(c.attr.get("value"))]
    missing = []
    if not images:
        missing.append('an <Image value="$..."> showing the task\'s image')
    if not dynamic:
        missing.append('a <Choices value="$..."> whose options are the task\'s candidates')
    if len(texts) < 2:
        missing.append('two <Text value="$..."> objects, the question and the answer')
    if missing:
        raise _refuse("lacks " + "; ".join(missing), "Add " + " and ".join(missing), where)
    named = {o.name: o for o in texts}
    question = named.get("question") or next(t for t in texts if t is not named.get("answer"))
    answer = named.get("answer") or next(t for t in texts if t is not question)
    rationales = dynamic[0]
    _refuse_shared_fields({"the image": images[0].value, "the question": question.value,
                           "the answer": answer.value, "the candidates": rationales.attr["value"]}, where)
    to_name = (rationales.to_name or [images[0].name])[0]
    if to_name not in {o.name for o in interface.objects}:
        raise _refuse(f"has <Choices name=\"{rationales.name}\"> pointing to toName=\"{to_name}\", which no "
                      "object is named", f"Set toName to the image's name (\"{images[0].name}\")", where)
    nones = [c for c in controls if c.tag == "Choices" and c is not rationales and len(c.labels) == 1]
    none_control = nones[0] if nones else None
    none_labels: tuple[str, ...] = ()
    if none_control is not None:
        stored = none_control.labels[0]  # the alias when the choice has one
        label = (getattr(none_control, "labels_attrs", {}) or {}).get(stored)
        none_labels = tuple(dict.fromkeys(x for x in (stored, str(getattr(label, "attr", {}).get("value") or "")) if x))
    written = next((c.name for c in controls if c.tag == "TextArea"), None)
    return LabelingSchema(image=_variable(images[0].value), question=_variable(question.value),
                          answer=_variable(answer.value), candidates=_variable(rationales.attr["value"]),
                          rationales=rationales.name, to_name=to_name,
                          none_control=none_control.name if none_control else None,
                          none_choice=none_labels[0] if none_labels else None, none_labels=none_labels,
                          written=written)


# Task data keys the importer writes beside the config's fields (illume.labelstudio.task.task_data).
IMPORTER_FIELDS = ("item_id", "split", "round")


def _refuse_shared_fields(fields: dict[str, str], where: str) -> None:
    """Each of the method's task fields is its own key: shared, the import would write one over the other."""
    seen: dict[str, str] = {}
    for role, value in fields.items():
        key = _variable(value)
        if key in IMPORTER_FIELDS:
            raise _refuse(f"shows {role} from ${key}, which the importer fills with the task's {key}",
                          f"Name that field otherwise, e.g. value=\"${role.split()[-1]}\"", where)
        if key in seen:
            raise _refuse(f"shows {seen[key]} and {role} from the same task field ${key}",
                          "Give each its own task field (the shipped config uses $image, $question, $answer "
                          "and $candidates)", where)
        seen[key] = role


def shipped_schema() -> LabelingSchema:
    """The schema of the shipped labeling config (exports converted without a project)."""
    return parse_schema(shipped_text(SHIPPED_CONFIG), " (the shipped labeling config)")


def project_schema(project: dict[str, Any]) -> LabelingSchema:
    """The schema of a Label Studio project (as the API returns it)."""
    where = f" of project {project.get('id')} ({project.get('title')!r})"
    return parse_schema(str(project.get("label_config") or ""), where)
