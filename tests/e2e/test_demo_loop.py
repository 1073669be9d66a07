"""The main job, reduced: real Label Studio, the real backend over HTTP, a real DeepSpeed job."""
from __future__ import annotations

import json

import pytest

from connector.demo import DemoConfig, run_demo
from connector.promotion import GateSettings
from illume.demo_model import DEMO_SAMPLING
from illume.sampling import SamplingConfig

pytestmark = [pytest.mark.label_studio, pytest.mark.slow]


def test_two_rounds_reload_the_backend_and_new_predictions_carry_the_new_version(tmp_path, tiny_model_dir):
    run_dir = tmp_path / "run"
    lines: list[str] = []
    config = DemoConfig(run_dir=run_dir, rounds=2, feedback_items=6, eval_items=4, model=tiny_model_dir("llava"),
                        gate=GateSettings(tolerance=1000.0, max_accuracy_drop=None),  # a random tiny model: promote it
                        train_args=("--epochs", "1", "--batch-size", "4"))
    result = run_demo(config, say=lines.append)
    first, second = result["rounds"]["1"], result["rounds"]["2"]

    # Round 1 sampled with the base model, trained a real adapter and reloaded the backend.
    assert first["predictions_by_version"] and "illume-round-1" not in first["predictions_by_version"]
    assert first["promoted"] and first["version"] == "illume-round-1"
    meta = json.loads((run_dir / "loop/round-1/train/adapter/illume_adapter.json").read_text())
    assert meta["version"] == "illume-round-1"
    # Round 2's tasks were all predicted by the reloaded model: the new version reached Label Studio.
    assert second["sampled_by"] == "illume-round-1"
    assert second["predictions_by_version"] == {"illume-round-1": 6}
    assert second["counts"]["completed"] == 6
    # Diversity per round, and round 2 sampled with the remedy on (the backend's default base share):
    # the reloaded adapter stayed unmerged, so part of its candidates came from the model as built.
    sampled = SamplingConfig(per_temperature=DEMO_SAMPLING["per_temperature"]).count  # the demo backend's
    assert all(0 < result["rounds"][k]["diversity"]["candidates_per_item"] <= sampled for k in ("1", "2"))
    assert "-> illume-round-1 (adapter kept unmerged" in (run_dir / "backend.log").read_text()

    # Metrics per round (0 = as built) and the report.
    assert {"0", "1", "2"} <= set(result["rounds"])
    assert all("rouge_l" in result["rounds"][k]["metrics"] for k in ("0", "1", "2"))
    report = (run_dir / "report" / "index.html").read_text()
    assert "Round 1: examples" in report and "data:image/png;base64" in report
    assert any("wall time" in line for line in lines)

    # Everything it started is stopped; a second run resumes from the state and does no work again.
    again = run_demo(config, say=lines.append)
    assert again["rounds"]["2"]["seconds"] == second["seconds"]
