"""Per-annotator quality: agreement with gold and with the majority (connector.agreement has the
project-wide kappa).

A decision is one annotator's tick (or not) of one candidate of one task, after judging
(connector.judging: their latest annotation per task, "None" wins, candidates they did not see
left out). Two figures per annotator:

  * gold agreement: on gold tasks (connector.gold), the share of their decisions that match what
    the reference-based critic (illume.critic, the simulated annotators' critic: on Shapes-X the
    scene, elsewhere ROUGE-L against the references) accepts;
  * majority agreement: on tasks judged by three or more people, the share of their decisions
    that match the strict majority of the *other* annotators of the task (ties left out), so a
    careless annotator cannot agree with a majority they make themselves.

An annotator's quality is their gold agreement once they have `min_decisions` gold decisions,
else their majority agreement once they have that many, else unknown (never left out for lack
of evidence). `export --min-annotator-quality Q` leaves out the annotations of the people whose
quality is below Q (connector.export_project).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from connector.gold import is_gold
from connector.judging import judge_task
from connector.simulate import task_subject
from illume.critic import DEFAULT_CRITIC, Critic, make_critic
from illume.errors import IllumeError
from illume.labeling_schema import LabelingSchema
from illume.labelstudio.task import task_references
from illume.options import option


@dataclass(frozen=True)
class QualitySettings:
    """How annotators are scored, and who is left out of an export."""

    min_quality: float | None = option(None, (
        "Leave out the annotations of people whose quality (gold agreement, else majority agreement) is below "
        "this share of matching decisions (default: everyone counts)."), flag="min-annotator-quality", min=0, max=1)
    critic: str = option(DEFAULT_CRITIC, (
        "The critic gold tasks are scored with: which candidates it accepts given the references (auto: the "
        "scene on Shapes-X, ROUGE-L against the references elsewhere; any --critic name)."), flag="gold-critic")
    min_decisions: int = option(20, (
        "Decisions (candidates judged) an annotator needs on gold tasks before their gold agreement counts, and "
        "on tasks with a majority before their majority agreement does."), flag="min-quality-decisions", min=1)

    def __post_init__(self) -> None:
        if self.min_quality is not None and not 0.0 <= self.min_quality <= 1.0:
            raise IllumeError(f"--min-annotator-quality must be between 0 and 1, got {self.min_quality}",
                              "Pass the share of decisions that must match gold (or the majority), e.g. 0.8.")
        if self.min_decisions < 1:
            raise IllumeError(f"--min-quality-decisions must be at least 1, got {self.min_decisions}",
                              "Pass e.g. 20.")


@dataclass
class AnnotatorFigures:
    """What one annotator did, and how often it matched gold and the others' majority."""

    tasks: int = 0
    gold_tasks: int = 0
    gold_decisions: int = 0
    gold_matches: int = 0
    majority_decisions: int = 0
    majority_matches: int = 0

    @property
    def gold_agreement(self) -> float | None:
        return round(self.gold_matches / self.gold_decisions, 6) if self.gold_decisions else None

    @property
    def majority_agreement(self) -> float | None:
        return round(self.majority_matches / self.majority_decisions, 6) if self.majority_decisions else None

    def quality(self, min_decisions: int) -> tuple[float | None, str | None]:
        """(quality, its basis: "gold" or "majority"), or (None, None) with too few decisions."""
        if self.gold_decisions >= min_decisions:
            return self.gold_agreement, "gold"
        if self.majority_decisions >= min_decisions:
            return self.majority_agreement, "majority"
        return None, None


def annotator_id(annotation: dict) -> Any:
    who = annotation.get("completed_by")
    return who.get("id") if isinstance(who, dict) else who


class AnnotatorQuality:
    """Accumulates per-annotator figures over exported tasks (`add`, or `observe` a task stream)."""

    def __init__(self, schema: LabelingSchema, settings: QualitySettings | None = None,
                 critic: Critic | None = None) -> None:
        self.schema = schema
        self.settings = settings or QualitySettings()
        self.critic = critic or make_critic(self.settings.critic)
        self.figures: dict[Any, AnnotatorFigures] = {}
        self.gold_tasks = 0

    def add(self, task: dict) -> None:
        judged = judge_task(task, self.schema)
        if judged is None:
            return
        texts = judged.feedback.candidates
        gold = None
        if is_gold(task):
            self.gold_tasks += 1
            verdicts = self.critic.tick(texts, task_references(task), task_subject(task, self.schema))
            gold = dict(zip(texts, verdicts))
        n = len(judged.votes)
        yes = {text: sum(vote[text] for vote in judged.votes) for text in texts}
        for who, vote in zip(judged.annotators, judged.votes):
            if who is None:
                continue
            figures = self.figures.setdefault(who, AnnotatorFigures())
            figures.tasks += 1
            if gold is not None:
                figures.gold_tasks += 1
                figures.gold_decisions += len(texts)
                figures.gold_matches += sum(vote[text] == gold[text] for text in texts)
            if n < 3:
                continue
            for text in texts:
                others_yes, others = yes[text] - vote[text], n - 1
                if 2 * others_yes != others:  # a tie among the others says nothing
                    figures.majority_decisions += 1
                    figures.majority_matches += vote[text] == (2 * others_yes > others)

    def observe(self, tasks: Iterable[dict]) -> Iterator[dict]:
        """The tasks, unchanged, counted on their way through."""
        for task in tasks:
            self.add(task)
            yield task

    def below(self, min_quality: float) -> set[Any]:
        """The annotators whose known quality is below min_quality."""
        return {who for who, f in self.figures.items()
                if (q := f.quality(self.settings.min_decisions)[0]) is not None and q < min_quality}

    def summary(self, names: dict[Any, str] | None = None) -> dict[str, Any]:
        """Per-annotator figures (JSON-ready, keyed by Label Studio user id) for the manifest and `status`."""
        names = names or {}
        annotators = {}
        for who in sorted(self.figures, key=str):
            f = self.figures[who]
            quality, basis = f.quality(self.settings.min_decisions)
            annotators[str(who)] = {"name": names.get(who), "tasks": f.tasks, "gold_tasks": f.gold_tasks,
                                    "gold_decisions": f.gold_decisions, "gold_agreement": f.gold_agreement,
                                    "majority_decisions": f.majority_decisions,
                                    "majority_agreement": f.majority_agreement, "quality": quality, "basis": basis}
        return {"critic": self.settings.critic, "min_decisions": self.settings.min_decisions,
                "gold_tasks": self.gold_tasks, "annotators": annotators}


TABLE_COLUMNS = ("annotator", "tasks", "gold_tasks", "gold_agreement", "majority_agreement", "quality", "basis",
                 "excluded")


def annotator_table(source: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per annotator (TABLE_COLUMNS), worst quality first, from an export manifest (its
    "annotator_quality"), that section itself, or `status`'s report. For the HTML report and `status`."""
    section = source.get("annotator_quality", source) if isinstance(source, dict) else {}
    section = section or {}
    excluded = {str(who) for who in section.get("excluded_annotators") or []}
    rows = []
    for who, f in (section.get("annotators") or {}).items():
        rows.append({"annotator": f.get("name") or who, "tasks": f.get("tasks"), "gold_tasks": f.get("gold_tasks"),
                     "gold_agreement": f.get("gold_agreement"), "majority_agreement": f.get("majority_agreement"),
                     "quality": f.get("quality"), "basis": f.get("basis"), "excluded": str(who) in excluded})
    return sorted(rows, key=lambda r: (r["quality"] is None, r["quality"] if r["quality"] is not None else 0,
                                       str(r["annotator"])))


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as aligned text, for the terminal."""
    if not rows:
        return "(no annotations yet)"
    cells = [list(TABLE_COLUMNS)] + [["-" if r[c] is None else (f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]))
                                      for c in TABLE_COLUMNS] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(TABLE_COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in cells)


def user_names(client: Any) -> dict[Any, str]:
    """Label Studio user id -> email (or username), for the tables."""
    from label_studio_sdk.core.api_error import ApiError

    try:
        return {u.id: (u.email or u.username or str(u.id)) for u in client.sdk.users.list()}
    except ApiError:  # names are a courtesy: a server that refuses the list still gets ids
        return {}
