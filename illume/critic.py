"""Simulated critics: who ticks candidates when no human is present (SPEC section 1).

The method's critic accepts a candidate when its ROUGE-L against the reference
explanations is >= 0.7; candidates shorter than 3 characters score 0. ROUGE-L here is the
COCO caption evaluation's: LCS precision/recall over tokens, F-measure with beta = 1.2,
precision and recall each taken as the best over the references. Two tokenizations
(`scoring`): "default" takes the words and numbers of the lower-cased text ([a-z0-9]+);
"paper" takes what the reference implementation's nlg-eval takes: the lower-cased, stripped
text split on spaces, punctuation attached ("round." != "round").

On Shapes-X every scene is known, so the "scene" critic accepts a candidate only when what
it states is true of the item's scene and supports the answer (illume.datasets.shapes_truth);
"scene+rouge-l" also needs the ROUGE-L threshold; "auto" (the default) is the scene critic
for items that carry a scene and the method's ROUGE-L critic for the others (VQA-X).

Another critic is one subclass of `Critic` with a `name`: defining it registers it, and
`--critic NAME` (or `--critic package.module:Class` for one in a module of your own) selects it.
"""
from __future__ import annotations

import importlib
import inspect
import random
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

from illume.errors import IllumeError

ACCEPT_THRESHOLD = 0.7
ROUGE_BETA = 1.2
MIN_CHARS = 3
DEFAULT_SCORING = "default"
PAPER_SCORING = "paper"
SCORINGS = (DEFAULT_SCORING, PAPER_SCORING)
SCORING_HELP = ("how texts are tokenised for ROUGE-L and the other metrics: default = words and numbers of the "
                "lower-cased text, exact-match accuracy, rationale after the gold answer; paper = the reference "
                "implementation's nlg-eval tokens (lower-cased, split on spaces, punctuation attached), "
                "substring accuracy, rationale after the model's own answer")


def check_scoring(scoring: str) -> str:
    if scoring not in SCORINGS:
        raise IllumeError(f"unknown scoring {scoring!r}", f"Use one of {', '.join(SCORINGS)}.")
    return scoring


def tokenize(text: str, scoring: str = DEFAULT_SCORING) -> list[str]:
    """Tokens for ROUGE-L: see the module docstring. Paper: COCO's Rouge splits on single spaces."""
    if check_scoring(scoring) == PAPER_SCORING:
        return text.lower().strip().split(" ")
    return re.findall(r"[a-z0-9]+", text.lower())


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(candidate: str, references: Sequence[str], scoring: str = DEFAULT_SCORING) -> float:
    """ROUGE-L F (beta 1.2) of one candidate against its references, in [0, 1]."""
    if len(candidate.strip()) < MIN_CHARS:
        return 0.0
    cand = tokenize(candidate, scoring)
    refs = [tokenize(r, scoring) for r in references if r and r.strip()]
    if not cand or not refs:
        return 0.0
    precision = recall = 0.0
    for ref in refs:
        lcs = _lcs(cand, ref)
        precision = max(precision, lcs / len(cand))
        recall = max(recall, lcs / len(ref) if ref else 0.0)
    if precision == 0 or recall == 0:
        return 0.0
    return (1 + ROUGE_BETA ** 2) * precision * recall / (recall + ROUGE_BETA ** 2 * precision)


@dataclass(frozen=True)
class Subject:
    """What the candidates explain: the item's question and answer, and its scene when it has one
    (Shapes-X items and tasks carry it in their meta)."""

    question: str = ""
    answer: str = ""
    scene: dict[str, Any] | None = None


class Critic:
    """Judges candidate rationales of one item against its reference explanations.

    A subclass implements `accepts` (or `judge`, when it needs the item's question, answer or
    scene); giving it a `name` registers it for `make_critic`. Critics that take a `threshold`
    receive `--threshold` when one is given, and those with a `scoring` field `--scoring`.
    """

    name: ClassVar[str] = ""
    registry: ClassVar[dict[str, type["Critic"]]] = {}

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            Critic.registry[cls.name] = cls

    def accepts(self, candidate: str, references: Sequence[str]) -> bool:
        raise NotImplementedError

    def judge(self, candidate: str, references: Sequence[str], subject: Subject | None = None) -> bool:
        return self.accepts(candidate, references)

    def tick(self, candidates: Sequence[str], references: Sequence[str], subject: Subject | None = None) -> list[bool]:
        return [self.judge(c, references, subject) for c in candidates]


@dataclass
class RougeCritic(Critic):
    """The method's critic: accepts when ROUGE-L against the references reaches the threshold."""

    name: ClassVar[str] = "rouge-l"
    threshold: float = ACCEPT_THRESHOLD
    scoring: str = DEFAULT_SCORING

    def __post_init__(self) -> None:
        check_scoring(self.scoring)

    def accepts(self, candidate: str, references: Sequence[str]) -> bool:
        return rouge_l(candidate, references, self.scoring) >= self.threshold


def _scene_verdict(candidate: str, subject: Subject | None):
    from illume.datasets.shapes_truth import judge

    if subject is None or subject.scene is None:
        raise IllumeError("the scene critic needs each item's scene (Shapes-X items carry it in their meta)",
                          "Use --critic rouge-l for items without a scene, or --critic auto.")
    return judge(candidate, subject.question, subject.answer, subject.scene)


@dataclass
class SceneCritic(Critic):
    """Shapes-X: accepts what is true of the item's scene and supports the answer (shapes_truth)."""

    name: ClassVar[str] = "scene"

    def judge(self, candidate: str, references: Sequence[str], subject: Subject | None = None) -> bool:
        return _scene_verdict(candidate, subject).accepted


@dataclass
class SceneRougeCritic(RougeCritic):
    """The scene critic, and the ROUGE-L threshold on top."""

    name: ClassVar[str] = "scene+rouge-l"

    def judge(self, candidate: str, references: Sequence[str], subject: Subject | None = None) -> bool:
        return _scene_verdict(candidate, subject).accepted and self.accepts(candidate, references)


@dataclass
class AutoCritic(RougeCritic):
    """The scene critic where the item has a scene (Shapes-X), the method's ROUGE-L critic elsewhere (VQA-X).
    The threshold and scoring apply to the ROUGE-L part."""

    name: ClassVar[str] = "auto"

    def judge(self, candidate: str, references: Sequence[str], subject: Subject | None = None) -> bool:
        if subject is not None and subject.scene is not None:
            return _scene_verdict(candidate, subject).accepted
        return self.accepts(candidate, references)


DEFAULT_CRITIC = AutoCritic.name


def make_critic(spec: str = DEFAULT_CRITIC, threshold: float | None = None,
                scoring: str = DEFAULT_SCORING) -> Critic:
    """The critic named `spec` (a registered name, or `module:Class`), with `threshold` if given
    and `scoring` when it is not the default."""
    check_scoring(scoring)
    if ":" in spec:
        module, _, attribute = spec.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError) as exc:
            raise IllumeError(f"cannot load the critic {spec!r} ({exc})",
                              "Give an importable module:Class, e.g. my_critics:ExactMatch.") from exc
        if not (isinstance(cls, type) and issubclass(cls, Critic)):
            raise IllumeError(f"{spec!r} is not a subclass of illume.critic.Critic", "Subclass Critic.")
    elif spec in Critic.registry:
        cls = Critic.registry[spec]
    else:
        raise IllumeError(f"unknown critic {spec!r}",
                          f"Use one of {', '.join(sorted(Critic.registry))}, or module:Class for your own.")
    options: dict[str, Any] = {}
    if threshold is not None:
        options["threshold"] = threshold
    if scoring != DEFAULT_SCORING:
        options["scoring"] = scoring
    try:
        return cls(**options)
    except TypeError as exc:
        raise IllumeError(f"the critic {spec!r} takes no {' or '.join(options)} ({exc})",
                          "Leave --threshold / --scoring out for it.") from exc


@dataclass
class NoisyAnnotator:
    """A crowd worker: a critic's judgement, flipped with probability error_rate."""

    critic: Critic
    error_rate: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError(f"error_rate must be in [0, 1], got {self.error_rate}")
        self._rng = random.Random(self.seed)

    def tick(self, candidates: Sequence[str], references: Sequence[str], subject: Subject | None = None) -> list[bool]:
        judged = (self.critic.tick(candidates, references, subject) if _takes_subject(self.critic)
                  else self.critic.tick(candidates, references))
        return [ok != (self._rng.random() < self.error_rate) for ok in judged]


def _takes_subject(critic: Critic) -> bool:
    """Critics written before subjects existed override tick(candidates, references) alone."""
    return len(inspect.signature(critic.tick).parameters) >= 3
