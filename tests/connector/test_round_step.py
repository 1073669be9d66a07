"""The one round step (connector.round_step) without Label Studio or a GPU: one state file that
`report` reads whichever command made the run (older loop.json and rounds.json layouts too), each
new adapter evaluated once, resume and the round lock. The training job is replaced by a stand-in
that writes what the job writes (the adapter's metadata and its per-epoch evaluations)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from connector import promotion, round_step
from connector.cli import main
from connector.promotion import GateSettings
from connector.retention import Retention
from connector.round_step import RoundRecord, RoundStep, RunState, TrainingSettings, exclusive
from illume.errors import IllumeError
from illume.records import Feedback, Item, write_jsonl

BUILT = {"rouge_l": 30.0, "cider": 40.0, "bleu_4": 10.0, "meteor": 15.0, "accuracy": 90.0}


def export_dir(path: Path, iteration: int) -> Path:
    """An export as export_project writes it: feedback (this round's and an earlier one's) and a manifest."""
    (path / "images").mkdir(parents=True)
    Image.new("RGB", (32, 32), "red").save(path / "images" / "a.png")
    write_jsonl(path / "feedback.jsonl", [
        Feedback("old", "images/a.png", "an earlier round's item?", "yes", ["an old one"], [], ["an old one"],
                 iteration=iteration - 1),
        Feedback("item-a", "images/a.png", "what color is the circle?", "red", ["the circle is red", "a dog"],
                 ["the circle is red"], ["a dog"], iteration=iteration)])
    (path / "manifest.json").write_text(json.dumps({"iteration": iteration, "answer_pool": None}))
    (path / "rows.jsonl").write_text("")
    return path


def report_rows(run_dir: Path) -> str:
    result = CliRunner().invoke(main, ["report", "--run-dir", str(run_dir)])
    assert result.exit_code == 0, result.output
    return (run_dir / "report" / "index.html").read_text()


def test_report_renders_a_run_made_by_round(tmp_path):
    """`round` (Label Studio's "Start training"): people's effort, no sampling step; its export's rows
    are numbered from 0, so the examples are the export's own iteration, not the round number."""
    export_dir(tmp_path / "round-1" / "export", iteration=0)
    state = RunState(trained_tasks=[11, 12])
    state.rounds[0] = RoundRecord(0, metrics=BUILT, version="base", promoted=True)
    state.rounds[1] = RoundRecord(1, done=["export", "train"], export=str(tmp_path / "round-1" / "export"),
                                  tasks=[11, 12], acceptance={"rate": 0.5}, items_with_accepted=1, items_judged=1,
                                  diversity={"candidates_per_item": 2.0, "distinct_2": 0.9},
                                  effort={"annotator_seconds": 20.0, "annotations_timed": 2, "accepted_rationales": 1,
                                          "seconds_per_accepted_rationale": 20.0},
                                  metrics={**BUILT, "rouge_l": 35.0}, version="illume-round-1", promoted=True,
                                  gate="rouge_l 35.0000 >= serving model's 30.0000 - 0")
    state.save(tmp_path)
    page = report_rows(tmp_path)
    assert "<td>1</td><td>–</td><td>50.0</td>" in page and "35.0" in page and "illume-round-1" in page
    assert "<h2>Annotation effort</h2>" in page and "<td>1</td><td>20.0</td><td>2</td>" in page
    assert "Round 1: examples" in page and "the circle is red" in page and "an old one" not in page


def test_report_renders_a_run_made_by_loop_as_older_loops_recorded_it(tmp_path):
    """An older loop's directory: loop.json, versions illume-round<n>, the imported count under `tasks`."""
    export_dir(tmp_path / "round-1" / "export", iteration=1)
    rounds = {"0": {"done": [], "metrics": BUILT, "version": "base", "promoted": True},
              "1": {"done": ["import", "predict", "annotate", "export", "train"], "tasks": 2, "sampled_by": "base",
                    "acceptance": {"rate": 0.25}, "items_with_accepted": 1, "items_judged": 2,
                    "metrics": {**BUILT, "rouge_l": 28.0}, "version": "illume-round1", "promoted": False}}
    (tmp_path / "loop.json").write_text(json.dumps({"rounds": rounds, "serving": {}}))
    page = report_rows(tmp_path)
    assert "illume-round1 (kept old)" in page and "<td>1</td><td>base</td><td>25.0</td>" in page
    assert "Round 1: examples" in page and "an old one" not in page
    assert RunState.load(tmp_path).rounds[1].imported == 2


def test_an_older_rounds_json_reads_as_the_one_layout(tmp_path):
    (tmp_path / "rounds.json").write_text(json.dumps({
        "rounds": [{"round": 1, "tasks": [3, 4], "version": "illume-round-1", "promoted": False,
                    "reason": "rouge_l below", "metrics": BUILT}],
        "trained_tasks": [3, 4], "serving": {}, "baseline": BUILT}))
    state = RunState.load(tmp_path)
    assert state.rounds[1].gate == "rouge_l below" and state.rounds[1].tasks == [3, 4]
    assert state.baseline == BUILT and state.open_round() == 2


class FakeJob:
    """The training job's files: the kept epoch's adapter and every epoch's held-out evaluation."""

    def __init__(self, scores: dict[int, dict]) -> None:
        self.scores, self.commands = scores, []

    def __call__(self, command: list[str], log: Path, echo=None) -> Path:
        self.commands.append(command)
        out = Path(command[command.index("--out") + 1])
        evaluated = "--eval-items" in command
        chosen = max(self.scores, key=lambda e: self.scores[e]["rouge_l"]) if evaluated else None
        (out / "adapter").mkdir(parents=True, exist_ok=True)
        (out / "adapter" / "illume_adapter.json").write_text(json.dumps(
            {"chosen_epoch": chosen, "epoch": chosen or max(self.scores)}))
        (out / "eval").mkdir(exist_ok=True)
        for epoch, scores in self.scores.items():
            logged = {**scores, "examples": [], "epoch": epoch} if evaluated else {"loss": 1.0, "epoch": epoch}
            (out / "eval" / f"epoch_{epoch}.json").write_text(json.dumps(logged))
        return out / "adapter"


@pytest.fixture
def evaluations(monkeypatch):
    """Each evaluate_model call, by adapter (None: the model as built); the model as built scores BUILT."""
    calls: list[str | None] = []

    def evaluate(base_model, adapter, items, batch_size=None):
        calls.append(adapter)
        return dict(BUILT) if adapter is None else {**BUILT, "rouge_l": 99.0}
    monkeypatch.setattr(promotion, "evaluate_model", evaluate)
    return calls


def held_out(tmp_path: Path) -> Path:
    Image.new("RGB", (8, 8), "red").save(tmp_path / "red.png")
    write_jsonl(tmp_path / "eval.jsonl", [Item("e1", "red.png", "color?", "red", ["it is red"])])
    return tmp_path / "eval.jsonl"


def test_each_adapter_is_evaluated_once_and_that_evaluation_is_the_record(tmp_path, evaluations, monkeypatch):
    job = FakeJob({1: {**BUILT, "rouge_l": 33.0}, 2: {**BUILT, "rouge_l": 36.0, "accuracy": 89.5}})
    monkeypatch.setattr(round_step, "run_training", job)
    run = tmp_path / "run"
    export_dir(round_path := run / "round-1" / "export", iteration=0)
    step = RoundStep(run, "base-model", TrainingSettings(dpo_weight=0.3, gate=GateSettings(max_accuracy_drop=1.0)),
                     held_out(tmp_path))
    record = step.state.round(1)
    record.tasks = [7]
    result = step.train(record)
    step.save()

    assert evaluations == [None]  # the model as built, once; the adapter only by the job (epoch 2 kept)
    assert result.promoted and record.metrics == {**BUILT, "rouge_l": 36.0, "accuracy": 89.5, "epoch": 2}
    command = job.commands[0]
    assert command[command.index("--min-accuracy") + 1] == "89" and "--eval-items" in command  # floor 90 - 1
    assert command[command.index("--dpo-weight") + 1] == "0.3" and command[command.index("--export") + 1] == str(
        round_path)
    state = json.loads((run / "rounds.json").read_text())
    assert state["rounds"]["1"]["version"] == "illume-round-1" and state["rounds"]["0"]["metrics"] == BUILT
    assert state["serving"]["version"] == "illume-round-1" and state["trained_tasks"] == [7]
    promoted = json.loads((run / "round-1" / "train" / "promotion.json").read_text())
    assert promoted["metrics"] == record.metrics and promoted["serving_metrics"] == BUILT

    # Round 2, the epoch not chosen on held-out items: the job gets none, the gate evaluates the adapter.
    export_dir(run / "round-2" / "export", iteration=1)
    step = RoundStep(run, "base-model", TrainingSettings(retention=Retention(select_epoch=False)),
                     held_out(tmp_path))
    record = step.state.round(2)
    step.train(record)
    assert "--eval-items" not in job.commands[1] and "--resume" not in job.commands[1]
    assert evaluations == [None, str(run / "round-2" / "train" / "adapter")] and record.metrics["rouge_l"] == 99.0


def test_an_interrupted_round_resumes_its_step_and_two_rounds_never_run_at_once(tmp_path):
    state = RunState()
    state.rounds[1] = RoundRecord(1, done=["export", "train"])
    state.rounds[2] = RoundRecord(2, done=["export"])
    assert state.open_round() == 2
    state.rounds[2].done.append("train")
    assert state.open_round() == 3
    with exclusive(tmp_path):
        with pytest.raises(IllumeError, match="already running"):
            with exclusive(tmp_path):
                pass
    with exclusive(tmp_path):  # released
        pass


def test_train_loop_and_round_take_the_same_training_options():
    def names(command: str) -> set[str]:
        return {option for param in main.commands[command].params for option in param.opts}

    shared = {"--gate-metric", "--tolerance", "--max-accuracy-drop", "--against-base", "--eval-batch-size",
              "--processes", "--dpo-weight", "--train-arg", "--epochs", "--select-epoch", "--warm-start"}
    assert all(shared <= names(command) for command in ("train", "round", "loop"))


def test_report_shows_each_annotators_quality_and_who_was_left_out(tmp_path):
    export = export_dir(tmp_path / "round-1" / "export", iteration=1)
    manifest = json.loads((export / "manifest.json").read_text())
    manifest["annotator_quality"] = {"threshold": 0.8, "excluded_annotators": [7], "annotators": {
        "3": {"name": "careful@example.com", "tasks": 40, "gold_tasks": 8, "gold_agreement": 0.95,
              "majority_agreement": 0.9, "quality": 0.95, "basis": "gold"},
        "7": {"name": "careless@example.com", "tasks": 40, "gold_tasks": 8, "gold_agreement": 0.48,
              "majority_agreement": 0.5, "quality": 0.48, "basis": "gold"}}}
    (export / "manifest.json").write_text(json.dumps(manifest))
    state = RunState()
    state.rounds[0] = RoundRecord(0, metrics=BUILT, version="base", promoted=True)
    state.rounds[1] = RoundRecord(1, done=["export", "train"], export=str(export), metrics=BUILT, promoted=False)
    state.save(tmp_path)
    page = report_rows(tmp_path)
    section = page[page.index("<h2>Annotators"):]
    assert section.index("careless@example.com") < section.index("careful@example.com")  # worst first
    assert "<td>0.480</td>" in section and "<td>True</td>" in section and "<td>0.950</td>" in section


def test_round_and_loop_export_with_the_same_annotator_quality_options_as_export():
    def names(command: str) -> set[str]:
        return {option for param in main.commands[command].params for option in param.opts}

    quality = {"--min-annotator-quality", "--gold-critic", "--min-quality-decisions"}
    assert all(quality <= names(command) for command in ("export", "round", "loop"))


def test_annotate_loop_and_demo_simulate_the_same_crowd():
    def names(command: str) -> set[str]:
        return {option for param in main.commands[command].params for option in param.opts}

    crowd = {"--annotators", "--critic", "--threshold", "--error-rate", "--per-task", "--seed"}
    assert all(crowd <= names(command) for command in ("annotate", "loop", "demo"))
