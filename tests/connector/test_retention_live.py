"""Answer retention in the loop, with a real Label Studio, the real backend and real training on a
tiny model: the answer pool leaves held-out items out, round 2 continues round 1's adapter (asked for:
warm start is an option, off by default), the
epoch is chosen on held-out items, and the round record says which parts were used."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.project import init_project, read_label_config
from illume.records import TrainingRow, read_jsonl, write_jsonl
from tests.connector.test_promotion_live import ADMIN, backend, colour_items  # noqa: F401 (fixture)

pytestmark = [pytest.mark.label_studio, pytest.mark.slow]


def test_two_rounds_keep_answers_as_the_method_does(label_studio, sync_client, backend, tmp_path):  # noqa: F811
    url, model = backend
    name = f"retain-{tmp_path.name}"
    project = init_project(sync_client, name, read_label_config(), backend_url=url).project
    root = Path(label_studio.data_dir) / name
    held_out = colour_items(root / "held")
    write_jsonl(tmp_path / "items.jsonl", colour_items(root / "fb") + held_out[:1])  # a held-out item slipped in
    write_jsonl(tmp_path / "eval.jsonl", held_out)
    result = CliRunner().invoke(main, [
        "loop", "--url", label_studio.url, "--api-key", label_studio.token, "--project", str(project["id"]),
        "--items", str(tmp_path / "items.jsonl"), "--eval-items", str(tmp_path / "eval.jsonl"),
        "--base-model", model, "--run-dir", str(tmp_path / "run"), "--rounds", "2",
        "--local-files-root", str(label_studio.data_dir), "--backend-url", url, "--admin-token", ADMIN,
        "--tolerance", "100", "--max-accuracy-drop", "100",  # a random tiny model: promote whatever it learns
        "--train-arg=--batch-size", "--train-arg=4", "--epochs", "2", "--warm-start", "--json"])
    assert result.exit_code == 0, result.output
    state = json.loads((tmp_path / "run" / "rounds.json").read_text())
    first, second = state["rounds"]["1"], state["rounds"]["2"]
    assert first["promoted"] and second["promoted"]
    for number in (1, 2):
        rows = read_jsonl(tmp_path / "run" / f"round-{number}" / "export" / "rows.jsonl", TrainingRow)
        assert rows and held_out[0].item_id not in {r.item_id for r in rows if r.kind == "answer"}
        pool = state["rounds"][str(number)]["retention"]["answer_pool"]
        assert pool["source"] == "project" and pool["held_out_excluded"] == 1 and pool["project_items"] == 4
    assert first["retention"]["warm_start_from"] is None  # round 1 starts from the model as built
    assert second["retention"]["warm_start_from"] == first["adapter"]  # round 2 continues what was served
    assert first["retention"]["answer_in_rationale"] is True
    assert first["retention"]["chosen_epoch"] in (1, 2) and len(first["retention"]["epoch_scores"]) == 2
    promotion = json.loads((tmp_path / "run" / "round-1" / "train" / "promotion.json").read_text())
    assert promotion["baseline_metrics"] == promotion["serving_metrics"] == state["rounds"]["0"]["metrics"]
    # evaluated once: the training job's evaluation of the epoch it kept is the gate's and the record's
    kept = tmp_path / "run" / "round-1" / "train" / "eval" / f"epoch_{first['retention']['chosen_epoch']}.json"
    assert promotion["metrics"] == first["metrics"] == {k: v for k, v in json.loads(kept.read_text()).items()
                                                        if k != "examples"}
    later = json.loads((tmp_path / "run" / "round-2" / "train" / "promotion.json").read_text())
    assert later["baseline_metrics"] == state["rounds"]["0"]["metrics"] and later["serving_metrics"] == first["metrics"]
    assert promotion["retention"] == first["retention"]  # the promotion record says it too

    # `illume-sync train` on round 2's export keeps the same record beside its decision
    result = CliRunner().invoke(main, [
        "train", "--export", str(tmp_path / "run" / "round-2" / "export"), "--base-model", model,
        "--out", str(tmp_path / "by-hand"), "--eval-items", str(tmp_path / "eval.jsonl"),
        "--serving-adapter", first["adapter"], "--tolerance", "100", "--max-accuracy-drop", "100",
        "--train-arg=--batch-size", "--train-arg=4", "--epochs", "1", "--warm-start", "--json"])
    assert result.exit_code == 0, result.output
    by_hand = json.loads((tmp_path / "by-hand" / "promotion.json").read_text())["retention"]
    assert by_hand["warm_start_from"] == first["adapter"] and by_hand["epochs"] == 1
    assert by_hand["answer_pool"] == second["retention"]["answer_pool"]  # read from the export's manifest
