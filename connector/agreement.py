"""Agreement between annotators on the (task, candidate) decisions of an export."""
from __future__ import annotations

from collections import Counter
from typing import Any

from connector.judging import Judged


class Agreement:
    """Fleiss' kappa (any number of raters per task) and Cohen's kappa when exactly two people rated.

    The subjects are (task, candidate) decisions of tasks with two or more annotators.
    """

    def __init__(self) -> None:
        self.subjects = 0
        self.sum_p = 0.0
        self.ratings = 0
        self.ticks = 0
        self.raters: Counter[int] = Counter()
        self.pairs: dict[tuple, tuple[list[bool], list[bool]]] = {}

    def add(self, judged: Judged) -> None:
        votes = judged.votes
        self.raters[len(votes)] += 1
        if len(votes) < 2:
            return
        n = len(votes)
        for text in judged.feedback.candidates:
            yes = sum(vote[text] for vote in votes)
            self.subjects += 1
            self.sum_p += (yes * yes + (n - yes) ** 2 - n) / (n * (n - 1))
            self.ratings += n
            self.ticks += yes
        if n == 2:
            key = tuple(sorted(map(str, judged.annotators)))
            order = sorted(range(2), key=lambda i: str(judged.annotators[i]))
            first, second = self.pairs.setdefault(key, ([], []))
            for text in judged.feedback.candidates:
                first.append(votes[order[0]][text])
                second.append(votes[order[1]][text])

    def fleiss(self) -> float | None:
        if not self.subjects:
            return None
        p_yes = self.ticks / self.ratings
        expected = p_yes ** 2 + (1 - p_yes) ** 2
        observed = self.sum_p / self.subjects
        return 1.0 if expected == 1 else round((observed - expected) / (1 - expected), 6)

    def cohen(self) -> float | None:
        only_pairs = set(self.raters) - {1} == {2}
        if len(self.pairs) != 1 or not only_pairs:
            return None
        first, second = next(iter(self.pairs.values()))
        if len(set(first) | set(second)) < 2:
            return 1.0 if first == second else 0.0
        from sklearn.metrics import cohen_kappa_score

        return round(float(cohen_kappa_score(first, second)), 6)

    def summary(self) -> dict[str, Any]:
        return {"fleiss_kappa": self.fleiss(), "cohen_kappa": self.cohen(), "decisions": self.subjects,
                "annotators_per_task": {str(k): v for k, v in sorted(self.raters.items())}}
