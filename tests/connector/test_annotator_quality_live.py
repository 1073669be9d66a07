"""On a real Label Studio, through the commands: a crowd of five simulated annotators with one careless
one (error rate 0.5); `export --min-annotator-quality` leaves out exactly that annotator's annotations,
says how many in the manifest, and the accepted rows are cleaner against the Shapes-X scene truth.
Gold flags (init/import --gold-share) and `status`'s per-annotator table are checked on the way."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.label_studio
BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "annotator_quality.py"


def benchmark(monkeypatch):
    spec = importlib.util.spec_from_file_location("annotator_quality_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


def test_min_annotator_quality_leaves_out_the_careless_annotator_and_raises_precision(label_studio, tmp_path, monkeypatch):
    bench = benchmark(monkeypatch)
    settings = bench.CrowdSettings(items=80, gold_share=0.25, per_task=3, min_quality=0.8, seed=0)
    figures = bench.run_crowd(label_studio.url, label_studio.token, Path(label_studio.data_dir), tmp_path, settings,
                              title=f"crowd-{tmp_path.name}")
    careless = "simulated-annotator-4@illume.local"  # the fifth: error rate 0.5
    assert figures["gold_tasks"] > 0
    assert figures["with"]["excluded_annotators"] == [careless]
    quality = figures["annotators"]
    assert quality[careless]["basis"] == "gold" and quality[careless]["quality"] < 0.7
    assert all(f["quality"] > 0.85 for who, f in quality.items() if who != careless)
    manifest = json.loads((tmp_path / "filtered" / "manifest.json").read_text())["annotator_quality"]
    assert manifest["threshold"] == 0.8 and manifest["excluded_annotations"] == quality[careless]["tasks"]
    assert figures["with"]["excluded_annotations"] == manifest["excluded_annotations"] > 0
    plain = json.loads((tmp_path / "plain" / "manifest.json").read_text())
    assert plain["annotator_quality"]["threshold"] is None and plain["annotator_quality"]["excluded_annotations"] == 0
    # tasks the careless annotator helped complete stay completed, judged by the other two
    assert figures["with"]["completed"] == figures["without"]["completed"] == settings.items
    assert figures["with"]["precision"] > figures["without"]["precision"]
    print(bench.report(figures))


def test_init_gold_share_flags_existing_tasks_and_later_imports_follow(illume_project, tmp_path):
    from click.testing import CliRunner

    from connector.cli import main
    from connector.gold import is_gold_item
    from connector.importing import ImagePlacer, import_items
    from illume.datasets import shapes

    kit = illume_project
    items = shapes.generate(kit.image_dir, seed=1, sizes={"train": 40})["train"]
    placer = ImagePlacer(kit.client, kit.id, kit.server.data_dir, kit.image_dir)
    assert import_items(kit.client, kit.id, items[:30], placer).gold == 0  # no share recorded yet

    def run(*args):
        result = CliRunner().invoke(main, [*args, "--url", kit.client.url, "--api-key", kit.server.token, "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    done = run("init", "--project", kit.project["title"], "--gold-share", "0.3")
    expected = {i.item_id for i in items[:30] if is_gold_item(i.item_id, 0.3)}
    assert done["gold"] == {"tasks": 30, "gold": len(expected), "changed": len(expected)} and expected
    assert run("init", "--project", kit.project["title"], "--gold-share", "0.3")["gold"]["changed"] == 0
    later = import_items(kit.client, kit.id, items[30:], placer)  # the share recorded on gold tasks is followed
    assert later.gold_share == 0.3 and later.gold == sum(is_gold_item(i.item_id, 0.3) for i in items[30:])
    tasks = list(kit.client.pages("/api/tasks", {"project": kit.id, "fields": "all"}))
    gold = {t["data"]["item_id"] for t in tasks if t["meta"].get("gold") is True}
    assert gold == {i.item_id for i in items if is_gold_item(i.item_id, 0.3)}
    assert all(t["meta"]["references"] and "gold" not in t["data"] for t in tasks)  # out of the annotators' view
