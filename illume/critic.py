"""Simulated critics: who ticks candidates when no human is present (SPEC section 1).

The method's critic accepts a candidate when its ROUGE-L against the reference
explanations is >= 0.7; candidates shorter than 3 characters score 0. ROUGE-L here is the
COCO caption evaluation's: LCS precision/recall over tokens, F-measure with beta = 1.2,
precision and recall each taken as the best over the references.

Another critic is one subclass of `Critic` with a `name`: defining it registers it, and
`--critic NAME` (or `--critic package.module:Class` for one in a module of your own) selects it.
"""
from __future__ import annotations

import importlib
import random
import re
from dataclasses import dataclass
from typing import ClassVar, Sequence

from illume.errors import IllumeError

ACCEPT_THRESHOLD = 0.7
ROUGE_BETA = 1.2
MIN_CHARS = 3


def tokenize(text: str) -> list[str]:
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


def rouge_l(candidate: str, references: Sequence[str]) -> float:
    """ROUGE-L F (beta 1.2) of one candidate against its references, in [0, 1]."""
    if len(candidate.strip()) < MIN_CHARS:
        return 0.0
    cand = tokenize(candidate)
    refs = [tokenize(r) for r in references if r and r.strip()]
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


class Critic:
    """Judges candidate rationales of one item against its reference explanations.

    A subclass implements `accepts`; giving it a `name` registers it for `make_critic`.
    Critics that take a `threshold` receive `--threshold` when one is given.
    """

    name: ClassVar[str] = ""
    registry: ClassVar[dict[str, type["Critic"]]] = {}

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            Critic.registry[cls.name] = cls

    def accepts(self, candidate: str, references: Sequence[str]) -> bool:
        raise NotImplementedError

    def tick(self, candidates: Sequence[str], references: Sequence[str]) -> list[bool]:
        return [self.accepts(c, references) for c in candidates]


@dataclass
class RougeCritic(Critic):
    """The method's critic: accepts when ROUGE-L against the references reaches the threshold."""

    name: ClassVar[str] = "rouge-l"
    threshold: float = ACCEPT_THRESHOLD

    def accepts(self, candidate: str, references: Sequence[str]) -> bool:
        return rouge_l(candidate, references) >= self.threshold


DEFAULT_CRITIC = RougeCritic.name


def make_critic(spec: str = DEFAULT_CRITIC, threshold: float | None = None) -> Critic:
    """The critic named `spec` (a registered name, or `module:Class`), with `threshold` if given."""
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
    try:
        return cls() if threshold is None else cls(threshold=threshold)
    except TypeError as exc:
        raise IllumeError(f"the critic {spec!r} takes no threshold ({exc})", "Leave --threshold out.") from exc


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

    def tick(self, candidates: Sequence[str], references: Sequence[str]) -> list[bool]:
        return [ok != (self._rng.random() < self.error_rate) for ok in self.critic.tick(candidates, references)]
