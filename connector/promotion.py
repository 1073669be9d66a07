"""One promotion step for every path that trains (`illume-sync train`, the loop, a labeling round).

A trained adapter is evaluated on held-out items beside the serving model, gated (rationale
metric and answer accuracy, see training_job.gate), recorded atomically in
`<run>/promotion.json`, and, when promoted and a backend is named, served by that backend.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from connector.backend_client import finish_earlier_reloads, reload_recorded
from connector.training_job import MAX_ACCURACY_DROP, evaluate_model, gate
from illume.critic import DEFAULT_SCORING, SCORING_HELP, SCORINGS
from illume.errors import IllumeError
from illume.layout import PROMOTION_RECORD
from illume.metrics import scored_as
from illume.options import option
from illume.records import Item, atomic_write_text



@dataclass(frozen=True)
class Backend:
    """The ML backend that serves a promoted adapter."""

    url: str
    admin_token: str

    @classmethod
    def from_options(cls, url: str | None, admin_token: str | None) -> "Backend | None":
        """None without a URL; a URL without the admin token is refused before any work starts."""
        if not url:
            return None
        if not admin_token:
            raise IllumeError(f"the backend {url} can only be reloaded with its admin token",
                              "Pass --admin-token (or ILLUME_ADMIN_TOKEN), or leave --backend-url out.")
        return cls(url, admin_token)


@dataclass(frozen=True)
class GateSettings:
    """The promotion gate (training_job.gate): one declaration, the options of train, round and loop."""

    metric: str = option("rouge_l", "Rationale metric compared by the gate.", flag="gate-metric")
    tolerance: float = option(0.0, "Promote even when the new rationale score is lower by at most this much.")
    max_accuracy_drop: float | None = option(MAX_ACCURACY_DROP, (
        "Refuse a new adapter whose held-out answer accuracy is lower by more points than this."), min=0)
    eval_batch_size: int | None = option(None, (
        "Held-out items per generate call when evaluating (default 8; lower it when memory is short)."), min=1)
    against_base: bool = option(True, (
        "Also refuse an adapter whose accuracy fell by more than --max-accuracy-drop from the model as built, not "
        "only from the serving model, so drops cannot add up round after round."))
    scoring: str = option(DEFAULT_SCORING, (
        f"Scoring the gate compares in (every evaluation records both), {SCORING_HELP}."), flag="gate-scoring",
        choices=SCORINGS)


@dataclass
class Promotion:
    adapter: str
    version: str
    promoted: bool
    reason: str
    metrics: dict[str, Any] | None = None  # the new adapter's held-out metrics
    serving_metrics: dict[str, Any] | None = None  # the serving model's, on the same items
    baseline_metrics: dict[str, Any] | None = None  # the model as built's (GateSettings.against_base)
    serving_version: str | None = None  # what the backend serves afterwards (None: no backend reloaded)
    retention: dict[str, Any] | None = None  # how the adapter kept answers (connector.retention.Retention.record)


def promote(adapter: str | Path, version: str, base_model: str, run_dir: Path, *,
            eval_items: Sequence[Item] = (), metrics: dict[str, Any] | None = None,
            serving_adapter: str | None = None,
            serving_metrics: dict[str, Any] | None = None, baseline_metrics: dict[str, Any] | None = None,
            settings: GateSettings = GateSettings(), backend: Backend | None = None,
            retention: dict[str, Any] | None = None, say: Callable[[str], None] = lambda _: None) -> Promotion:
    """Gate the adapter against the serving model (and the model as built), record the decision,
    reload the backend if promoted.

    `metrics`: the adapter's held-out metrics when already measured on `eval_items` (the training
    job's evaluation of the epoch it kept, connector.round_step.kept_epoch_metrics), so that each
    adapter is evaluated once. `serving_metrics` / `baseline_metrics` save evaluating those models
    again when they are already known (the run's state keeps them); otherwise they are evaluated
    on the same items, the model as built only when it is not the serving model.
    """
    adapter = str(adapter)
    if backend is not None:  # a reload an earlier round left pending (the backend was down) goes first
        finish_earlier_reloads(run_dir, backend.url, backend.admin_token, say)
    if eval_items:
        if metrics is None:
            metrics = evaluate_model(base_model, adapter, list(eval_items), settings.eval_batch_size)
        serving_metrics, baseline_metrics = reference_metrics(base_model, serving_adapter, list(eval_items), settings,
                                                              serving_metrics, baseline_metrics)
        decision = gate(*(scored_as(m, settings.scoring) if m is not None else None
                          for m in (metrics, serving_metrics)), settings.metric, settings.tolerance,
                        settings.max_accuracy_drop,
                        scored_as(baseline_metrics, settings.scoring) if baseline_metrics is not None else None)
        reason = decision.reason + (f" [{settings.scoring} scoring]" if settings.scoring != DEFAULT_SCORING else "")
        result = Promotion(adapter, version, decision.promote, reason, metrics, serving_metrics, baseline_metrics)
    else:
        result = Promotion(adapter, version, True, "no held-out items: promoted without a gate")
    result.retention = retention
    say(result.reason)
    _record(run_dir, result)  # the decision stands even if the reload below fails
    if result.promoted and backend is not None:
        # recorded in run_dir until served, so `illume-sync reload --run` can finish a failed reload
        status = reload_recorded(run_dir, backend.url, backend.admin_token, base_model, adapter, version)
        result.serving_version = status.get("serving_version")
        say(f"backend serves {result.serving_version!r}")
        _record(run_dir, result)
    return result


def reference_metrics(base_model: str, serving_adapter: str | None, items: list[Item], settings: GateSettings,
                      serving: dict[str, Any] | None = None, baseline: dict[str, Any] | None = None
                      ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(serving model's, model as built's) held-out metrics, each evaluated only when not known yet; the
    model as built is the serving model while no adapter is served (None without against_base)."""
    if baseline is None and settings.against_base and serving_adapter is None:
        baseline = serving
    if serving is None:
        serving = baseline if serving_adapter is None and baseline is not None else evaluate_model(
            base_model, serving_adapter, items, settings.eval_batch_size)
    if baseline is None and settings.against_base:
        baseline = serving if serving_adapter is None else evaluate_model(base_model, None, items,
                                                                          settings.eval_batch_size)
    return serving, baseline if settings.against_base else None


def _record(run_dir: Path, result: Promotion) -> None:
    atomic_write_text(Path(run_dir) / PROMOTION_RECORD, json.dumps(asdict(result), indent=1, sort_keys=True))
