"""Is a Shapes-X rationale true of its scene, and does it support the answer?

Shapes-X (illume/datasets/shapes.py) knows every scene, so a statement in its vocabulary
(colours, kinds, sizes, the four quadrants, left/right/above/below, counts, listings) can
be checked exactly. `judge(statement, question, answer, scene)` parses the statement into
claims, checks each against the scene, and then asks whether the facts it states entail
the answer to the question (which is one of the generator's question templates). A
statement that does not parse in that vocabulary is not accepted: its truth is unknown.

Facts are tuples about shape indices of the scene, e.g. ("attr", 2, "color", "red"),
("rel", 0, "left", 1), ("count", 3); a description ("the red circle") counts as stating what
it says about the shape it refers to when only one shape fits it (kinds are unique in a scene).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from illume.datasets.shapes import COLORS, KINDS, NUMBER_WORDS, Scene, Shape, where

SIZE_WORDS = {"small": "small", "large": "large", "big": "large", "tiny": "small"}
PLACES = ("picture", "image")
HORIZONTAL = {"left": "right", "right": "left"}
VERTICAL = {"above": "below", "below": "above"}
COMPARATIVE = {"higher": "above", "lower": "below", "left": "left", "right": "right"}
NUMBERS = {word: n for n, word in NUMBER_WORDS.items()} | {str(n): n for n in NUMBER_WORDS}
NOUNS = ("object", "thing", "shape", "one")


class Unparsed(Exception):
    """The statement is not in the Shapes-X vocabulary (or not in a form this parser knows)."""


@dataclass(frozen=True)
class Description:
    """What a noun phrase says about a shape; None: not said."""

    kind: str | None = None
    color: str | None = None
    size: str | None = None
    place: str | None = None  # "top left", ...

    def attributes(self) -> dict[str, str]:
        return {k: v for k, v in (("kind", self.kind), ("color", self.color), ("size", self.size),
                                  ("place", self.place)) if v}

    def matches(self, shape: Shape) -> bool:
        return all(attribute(shape, k) == v for k, v in self.attributes().items())


@dataclass(frozen=True)
class Ref:
    description: Description
    definite: bool  # "the ...": exactly one shape; "a ...": at least one


def attribute(shape: Shape, name: str) -> str:
    return where(shape) if name == "place" else shape[name]


def relation_holds(a: Shape, relation: str, b: Shape) -> bool:
    return {"left": a["col"] < b["col"], "right": a["col"] > b["col"],
            "above": a["row"] < b["row"], "below": a["row"] > b["row"]}[relation]


# ---------------------------------------------------------------- claims
@dataclass
class Has:
    subject: Ref
    attributes: dict[str, str] = field(default_factory=dict)
    not_attributes: dict[str, str] = field(default_factory=dict)
    only_color: bool = False  # "... is the only red shape"


@dataclass
class Relation:
    a: Ref
    relation: str  # left | right | above | below
    b: Ref


@dataclass
class Exists:
    ref: Ref


@dataclass
class Absent:
    description: Description


@dataclass
class Count:
    number: int


@dataclass
class Listing:
    descriptions: list[Description]
    exhaustive: bool


Claim = Has | Relation | Exists | Absent | Count | Listing


# ---------------------------------------------------------------- parsing
class Tokens:
    def __init__(self, words: Sequence[str]) -> None:
        self.words, self.i = list(words), 0

    def peek(self, offset: int = 0) -> str | None:
        j = self.i + offset
        return self.words[j] if j < len(self.words) else None

    def take(self, *options: str) -> str | None:
        word = self.peek()
        if word is not None and (not options or word in options):
            self.i += 1
            return word
        return None

    def expect(self, *phrase: str) -> None:
        if not self.accept(*phrase):
            raise Unparsed(f"expected {' '.join(phrase)!r} at {' '.join(self.words[self.i:])!r}")

    def accept(self, *phrase: str) -> bool:
        if self.words[self.i:self.i + len(phrase)] == list(phrase):
            self.i += len(phrase)
            return True
        return False

    def done(self) -> bool:
        return self.i >= len(self.words)


def words_of(sentence: str) -> list[str]:
    spaced = re.sub(r"([,:])", r" \1 ", sentence.lower())
    return spaced.split()


def parse_place(t: Tokens) -> str | None:
    """'at the top left', 'in the bottom right (corner)'; 'in the picture' is no place."""
    if t.peek() in ("at", "in") and t.peek(1) == "the" and t.peek(2) in ("top", "bottom") \
            and t.peek(3) in ("left", "right"):
        t.i += 2
        place = f"{t.take()} {t.take()}"
        t.accept("corner")
        return place
    return None


def parse_in_place(t: Tokens) -> None:
    """An optional 'in the picture' / 'in the image' (says nothing)."""
    if t.peek() == "in" and t.peek(1) == "the" and t.peek(2) in PLACES:
        t.i += 3


def parse_np(t: Tokens, determiners: Sequence[str] = ("the", "a", "an")) -> tuple[Ref, bool]:
    """A noun phrase: (reference, 'only' said)."""
    determiner = t.take(*determiners)
    if determiner is None:
        raise Unparsed(f"expected a noun phrase at {' '.join(t.words[t.i:])!r}")
    only = bool(t.take("only"))
    values: dict[str, str] = {}
    while (word := t.peek()) in SIZE_WORDS or word in COLORS:
        key = "size" if word in SIZE_WORDS else "color"
        if key in values:
            raise Unparsed(f"two {key}s in one noun phrase")
        values[key] = SIZE_WORDS.get(word, word)
        t.i += 1
    noun = t.take(*KINDS, *NOUNS)
    if noun is None or (noun == "one" and not values):
        raise Unparsed(f"expected a shape at {' '.join(t.words[t.i:])!r}")
    if noun in KINDS:
        values["kind"] = noun
    if place := parse_place(t):
        values["place"] = place
    parse_in_place(t)
    return Ref(Description(**values), determiner == "the"), only


def parse_listing(t: Tokens) -> list[Description]:
    """'a circle, a red square and a triangle'."""
    found = [parse_np(t, ("a", "an"))[0].description]
    while t.take(",", "and"):
        found.append(parse_np(t, ("a", "an"))[0].description)
    return found


def parse_relation_word(t: Tokens) -> str | None:
    """'to the left of', 'above', 'below', 'further right than', 'higher than', 'on the left side of'."""
    if t.accept("to", "the"):
        side = t.take(*HORIZONTAL)
        if side is None:
            raise Unparsed("expected left or right")
        t.expect("of")
        return side
    if t.accept("on", "the") and t.peek() in HORIZONTAL and t.peek(1) == "side":
        side = t.take()
        t.expect("side", "of")
        return side
    if word := t.take(*VERTICAL):
        return word
    if t.accept("further") or t.peek() in ("higher", "lower"):
        word = t.take(*COMPARATIVE)
        if word is None:
            raise Unparsed("expected a comparison")
        t.expect("than")
        return COMPARATIVE[word]
    return None


def parse_predicate(t: Tokens, subject: Ref) -> list[Claim]:
    """What follows 'is' (several joined by 'and' / 'and it is')."""
    has = Has(subject)
    claims: list[Claim] = [has]
    while True:
        t.take("painted", "drawn")
        if (relation := parse_relation_word(t)) is not None:
            claims.append(Relation(subject, relation, parse_np(t, ("the",))[0]))
            parse_in_place(t)
        elif place := parse_place(t):
            has.attributes["place"] = place
        elif t.accept("the", "only"):
            color = t.take(*COLORS)
            if color is None or not t.take("shape", "object", "thing"):
                raise Unparsed("expected 'the only <colour> shape'")
            has.attributes["color"], has.only_color = color, True
        elif t.take("a", "an"):
            t.i -= 1
            ref, _ = parse_np(t, ("a", "an"))
            for key, value in ref.description.attributes().items():
                has.attributes[key] = value
        else:
            word = t.take(*COLORS, *SIZE_WORDS)
            if word is None:
                raise Unparsed(f"expected a colour, size or place at {' '.join(t.words[t.i:])!r}")
            has.attributes["color" if word in COLORS else "size"] = SIZE_WORDS.get(word, word)
            if t.accept(",", "not"):
                has.not_attributes["color"] = _need(t.take(*COLORS), "a colour after 'not'")
        if not t.take("and"):
            return claims
        t.accept("it", "is")


def _need(value: str | None, what: str) -> str:
    if value is None:
        raise Unparsed(f"expected {what}")
    return value


def parse_sentence(words: list[str]) -> list[Claim]:
    t = Tokens(words)
    claims = _parse_sentence(t)
    if not t.done():
        raise Unparsed(f"left over: {' '.join(t.words[t.i:])!r}")
    return claims


def _counted_listing(t: Tokens, number: int) -> list[Claim]:
    claims: list[Claim] = [Count(number)]
    if t.take(":"):
        claims.append(Listing(parse_listing(t), exhaustive=True))
    return claims


def _parse_sentence(t: Tokens) -> list[Claim]:
    if t.accept("there", "are"):
        number = NUMBERS.get(t.take() or "")
        t.expect("shapes")
        return _counted_listing(t, _need_number(number))
    if t.peek() in NUMBERS and t.peek(1) == "shapes":
        number = NUMBERS[t.take() or ""]
        t.expect("shapes", "are", "drawn")
        return _counted_listing(t, number)
    if t.accept("there", "is", "no") or t.accept("no"):
        kind = _need(t.take(*KINDS), "a shape after 'no'")
        t.accept("is", "drawn")
        parse_in_place(t)
        return [Absent(Description(kind=kind))]
    if t.accept("there", "is"):
        ref, _ = parse_np(t, ("a", "an"))
        claims: list[Claim] = [Exists(ref)]
        if t.accept("but", "no"):
            color = _need(t.take(*COLORS), "a colour after 'but no'")
            t.expect("one")
            claims.append(Absent(Description(kind=ref.description.kind, color=color)))
        return claims
    if t.accept("i", "can", "see"):
        return [Listing(parse_listing(t), exhaustive=False)]
    if t.accept("the", "shapes", "are"):
        return [Listing(parse_listing(t), exhaustive=True)]
    if t.peek() == "the" and t.peek(1) in PLACES and t.peek(2) in ("shows", "contains", "only"):
        t.i += 2
        exhaustive = t.accept("only", "has")
        if not exhaustive:
            t.take()
        if t.peek() in ("a", "an") and t.peek(2) == "that":  # "the image contains a circle that is red"
            ref, _ = parse_np(t, ("a", "an"))
            t.expect("that", "is")
            return [Exists(ref), *parse_predicate(t, ref)]
        claims = [Listing(parse_listing(t), exhaustive)]
        if t.accept("but", "no"):
            claims.append(Absent(Description(kind=_need(t.take(*KINDS), "a shape after 'but no'"))))
        return claims
    subject, _ = parse_np(t)
    return _verb_phrase(t, subject)


def _need_number(number: int | None) -> int:
    if number is None:
        raise Unparsed("expected a number of shapes")
    return number


def _verb_phrase(t: Tokens, subject: Ref) -> list[Claim]:
    if t.accept("has", "a"):
        color = _need(t.take(*COLORS), "a colour")
        t.expect("color")
        t.accept("instead")
        return [Has(subject, {"color": color})]
    if t.accept("takes", "up"):
        amount = _need(t.take("most", "little"), "'most' or 'little'")
        t.expect("of", "its", "space")
        return [Has(subject, {"size": "large" if amount == "most" else "small"})]
    if t.take("sits"):
        relation = _need(parse_relation_word(t), "where it sits")
        claims: list[Claim] = [Relation(subject, relation, parse_np(t, ("the",))[0])]
        parse_in_place(t)
        return claims
    if t.accept("is", "placed"):
        relation = _need(parse_relation_word(t), "where it is placed")
        return [Relation(subject, relation, parse_np(t, ("the",))[0])]
    t.expect("is")
    if t.accept("on", "the") and t.peek() in HORIZONTAL:  # "the X is on the right and the Y on the left"
        side = t.take() or ""
        t.expect("and")
        other, _ = parse_np(t, ("the",))
        t.expect("on", "the")
        if t.take(HORIZONTAL[side]) is None:
            raise Unparsed("expected the opposite side")
        return [Relation(other, HORIZONTAL[side], subject)]
    if t.peek() == "drawn" and (t.peek(1) is None or t.peek(1) == "at" or t.peek(1) == "in"):
        t.take()
        if not subject.definite:  # "a large red circle is drawn (in the image | at the top left)"
            place = parse_place(t)
            parse_in_place(t)
            description = subject.description
            if place:
                description = Description(**{**description.attributes(), "place": place})
            return [Exists(Ref(description, False))]
        raise Unparsed("'the ... is drawn' says nothing")
    return parse_predicate(t, subject)


def parse(statement: str) -> list[Claim]:
    """The claims of a statement (sentences split at '.' or ';'); Unparsed if any is not understood."""
    sentences = [s for s in re.split(r"[.;]", statement.strip().lower()) if s.strip()]
    if not sentences:
        raise Unparsed("empty statement")
    return [claim for sentence in sentences for claim in parse_sentence(words_of(sentence))]


# ---------------------------------------------------------------- truth
Fact = tuple


class False_(Exception):
    """A claim is false of the scene."""


def _resolve(ref: Ref, shapes: Sequence[Shape]) -> list[int]:
    """The shapes a noun phrase may refer to. As in the generator's own remarks ("the green object
    at the bottom left" with two there), 'the' need not be unique: the claim is then true when it
    holds of one of them, and states facts only about a description that is unique."""
    found = [i for i, s in enumerate(shapes) if ref.description.matches(s)]
    if not found:
        raise False_(f"there is no {ref.description}")
    return found


def _describe(i: int, description: Description) -> set[Fact]:
    return {("attr", i, key, value) for key, value in description.attributes().items()}


def _only(ids: list[int]) -> int | None:
    return ids[0] if len(ids) == 1 else None


def check(claim: Claim, scene: Scene) -> set[Fact]:
    """The facts a true claim states; False_ when it is false of the scene."""
    shapes = scene["shapes"]
    if isinstance(claim, Has):
        candidates = _resolve(claim.subject, shapes)
        ids = [i for i in candidates if all(attribute(shapes[i], k) == v for k, v in claim.attributes.items())
               and not any(attribute(shapes[i], k) == v for k, v in claim.not_attributes.items())]
        if not ids:
            raise False_(f"{claim.subject.description} is not {claim.attributes}")
        if claim.only_color and sum(s["color"] == claim.attributes["color"] for s in shapes) != 1:
            raise False_(f"more than one {claim.attributes['color']} shape")
        if (i := _only(candidates)) is None:
            return set()
        facts = _describe(i, claim.subject.description) | {("attr", i, k, v) for k, v in claim.attributes.items()}
        return facts | {("not", i, k, v) for k, v in claim.not_attributes.items()}
    if isinstance(claim, Relation):
        a, b = _resolve(claim.a, shapes), _resolve(claim.b, shapes)
        if not any(i != j and relation_holds(shapes[i], claim.relation, shapes[j]) for i in a for j in b):
            raise False_(f"{claim.a.description} is not {claim.relation} {claim.b.description}")
        if (i := _only(a)) is None or (j := _only(b)) is None:
            return set()
        return _describe(i, claim.a.description) | _describe(j, claim.b.description) | {("rel", i, claim.relation, j)}
    if isinstance(claim, Exists):
        ids = _resolve(claim.ref, shapes)
        return _describe(i, claim.ref.description) if (i := _only(ids)) is not None else set()
    if isinstance(claim, Absent):
        if any(claim.description.matches(s) for s in shapes):
            raise False_(f"there is a {claim.description}")
        return {("absent", claim.description)}
    if isinstance(claim, Count):
        if claim.number != len(shapes):
            raise False_(f"{len(shapes)} shapes, not {claim.number}")
        return {("count", claim.number)}
    return _check_listing(claim, shapes)


def _check_listing(claim: Listing, shapes: Sequence[Shape]) -> set[Fact]:
    """Each listed shape is a different shape of the scene (and all of them, when exhaustive)."""
    used: set[int] = set()
    facts: set[Fact] = set()
    for description in claim.descriptions:
        free = [i for i, s in enumerate(shapes) if i not in used and description.matches(s)]
        if not free:
            raise False_(f"no (further) {description}")
        used.add(free[0])
        if len([i for i, s in enumerate(shapes) if description.matches(s)]) == 1:
            facts |= _describe(free[0], description)
    if claim.exhaustive and len(used) != len(shapes):
        raise False_(f"{len(shapes)} shapes, {len(used)} listed as all of them")
    facts.add(("listed", len(used)))
    if claim.exhaustive:
        facts.add(("all", tuple(claim.descriptions)))
    return facts


# ---------------------------------------------------------------- support
QUESTIONS = [
    ("color", re.compile(rf"what color is the ({'|'.join(KINDS)})\?")),
    ("shape", re.compile(rf"what shape is the ({'|'.join(COLORS)}) object\?")),
    ("count", re.compile(r"how many shapes are there\?")),
    ("horizontal", re.compile(rf"is the ({'|'.join(KINDS)}) left or right of the ({'|'.join(KINDS)})\?")),
    ("vertical", re.compile(rf"is the ({'|'.join(KINDS)}) above or below the ({'|'.join(KINDS)})\?")),
    ("size", re.compile(rf"is the ({'|'.join(KINDS)}) large or small\?")),
    ("yesno", re.compile(rf"is there an? ({'|'.join(COLORS)}) ({'|'.join(KINDS)})\?")),
]


def _kind_index(scene: Scene, kind: str) -> int | None:
    return next((i for i, s in enumerate(scene["shapes"]) if s["kind"] == kind), None)


def supports(facts: set[Fact], question: str, answer: str, scene: Scene) -> bool:
    """Whether the (true) facts entail `answer` to a Shapes-X question; False for other questions."""
    q, a = " ".join(question.lower().split()), answer.strip().lower()
    for qtype, pattern in QUESTIONS:
        if match := pattern.fullmatch(q):
            return _entails(qtype, match.groups(), a, facts, scene)
    return False


def _entails(qtype: str, groups: tuple[str, ...], answer: str, facts: set[Fact], scene: Scene) -> bool:
    attrs = {(f[1], f[2], f[3]) for f in facts if f[0] == "attr"}
    if qtype in ("color", "size"):
        i = _kind_index(scene, groups[0])
        return (i, qtype, answer) in attrs
    if qtype == "shape":
        return any((i, "color", groups[0]) in attrs and (i, "kind", answer) in attrs for i, _, _ in attrs)
    if qtype == "count":
        return ("count", NUMBERS.get(answer)) in facts or ("listed", NUMBERS.get(answer)) in facts
    if qtype in ("horizontal", "vertical"):
        i, j = _kind_index(scene, groups[0]), _kind_index(scene, groups[1])
        opposite = (HORIZONTAL if qtype == "horizontal" else VERTICAL).get(answer)
        return opposite is not None and (("rel", i, answer, j) in facts or ("rel", j, opposite, i) in facts)
    color, kind = groups
    if answer == "yes":
        return any((i, "kind", kind) in attrs and (i, "color", color) in attrs for i, _, _ in attrs)
    if answer != "no":
        return False
    if ("absent", Description(kind=kind)) in facts or ("absent", Description(kind=kind, color=color)) in facts:
        return True
    if _other_color_of(kind, color, attrs):
        return True
    if any(f[0] == "not" and f[2:] == ("color", color) and (f[1], "kind", kind) in attrs for f in facts):
        return True
    return any(f[0] == "all" and all((d.kind and d.kind != kind) or (d.color and d.color != color) for d in f[1])
               for f in facts)


def _other_color_of(kind: str, color: str, attrs: set[tuple]) -> bool:
    """The one shape of `kind` (kinds are unique in a scene) is said to have another colour."""
    return any((i, "kind", kind) in attrs and key == "color" and value != color for i, key, value in attrs)


@dataclass
class Verdict:
    parsed: bool
    true: bool
    supports: bool
    why: str = ""

    @property
    def accepted(self) -> bool:
        return self.parsed and self.true and self.supports


def judge(statement: str, question: str, answer: str, scene: Scene) -> Verdict:
    """Parse the statement, check every claim against the scene, then whether it supports the answer."""
    try:
        claims = parse(statement)
    except Unparsed as exc:
        return Verdict(False, False, False, f"not understood: {exc}")
    facts: set[Fact] = set()
    try:
        for claim in claims:
            facts |= check(claim, scene)
    except False_ as exc:
        return Verdict(True, False, False, f"false: {exc}")
    ok = supports(facts, question, answer, scene)
    return Verdict(True, True, ok, "" if ok else "true, but does not support the answer")


def is_true(statement: str, scene: Scene) -> bool | None:
    """True/False when the statement parses, None when it does not."""
    verdict = judge(statement, "", "", scene)
    return verdict.true if verdict.parsed else None


def scene_of(meta: Any) -> Scene | None:
    """The Shapes-X scene in an item's or a task's meta, if it has one."""
    scene = meta.get("scene") if isinstance(meta, dict) else None
    return scene if isinstance(scene, dict) and isinstance(scene.get("shapes"), list) else None


__all__ = ["judge", "is_true", "parse", "supports", "scene_of", "Verdict", "Unparsed"]
