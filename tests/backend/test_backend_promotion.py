"""One promotion step (connector.promotion) against the real backend over HTTP: the gate's
decision is recorded atomically, a promoted adapter is served, a refused one is not."""
from __future__ import annotations

import json

import pytest
import requests
from click.testing import CliRunner

from backend_helpers import FAST_SAMPLING, ServerThread, colour_items
from connector.cli import main
from connector.promotion import Backend, GateSettings, promote
from illume.layout import PROMOTION_RECORD
from illume.errors import IllumeError
from illume.records import Item
from ml_backend.app import create_app
from ml_backend.model_holder import ModelHolder
from ml_backend.settings import Settings
from test_backend_architectures import save_fresh_adapter


@pytest.fixture
def held_out(tmp_path) -> list[Item]:
    return colour_items(tmp_path, "held")


def test_promote_records_the_decision_and_reloads_only_when_promoted(llava_dir, tmp_path, held_out):
    base = str(llava_dir)
    app = create_app(Settings(model=base, device="cpu", admin_token="adm1n", sampling=FAST_SAMPLING),
                     ModelHolder.load(base, device="cpu"))
    adapter = save_fresh_adapter(base, tmp_path / "adapter", "unused")
    with ServerThread(app) as server:
        backend = Backend(server.url, "adm1n")
        first = requests.get(f"{server.url}/health", timeout=10).json()["model_version"]

        refused = promote(adapter, "round-1", base, tmp_path / "refused", eval_items=held_out,
                          settings=GateSettings(tolerance=-1000.0), backend=backend)  # must beat the serving model by 1000
        assert not refused.promoted and "keeping the serving model" in refused.reason
        assert refused.serving_version is None
        assert requests.get(f"{server.url}/health", timeout=10).json()["model_version"] == first
        record = json.loads((tmp_path / "refused" / PROMOTION_RECORD).read_text())
        assert record["promoted"] is False and record["metrics"]["rouge_l"] == refused.metrics["rouge_l"]

        promoted = promote(adapter, "round-1", base, tmp_path / "promoted", eval_items=held_out,
                           serving_metrics=refused.serving_metrics, settings=GateSettings(tolerance=1000.0),
                           backend=backend)
        assert promoted.promoted and promoted.serving_version == "round-1"
        assert requests.get(f"{server.url}/health", timeout=10).json()["model_version"] == "round-1"
        record = json.loads((tmp_path / "promoted" / PROMOTION_RECORD).read_text())
        assert record == {**record, "promoted": True, "serving_version": "round-1", "version": "round-1"}
        assert not list((tmp_path / "promoted").glob("*.tmp*"))  # written atomically, nothing left behind


def test_a_backend_url_without_admin_token_is_refused_before_training(tmp_path):
    with pytest.raises(IllumeError, match="admin token"):
        Backend.from_options("http://127.0.0.1:9", None)
    assert Backend.from_options(None, None) is None
    (tmp_path / "export").mkdir()
    result = CliRunner().invoke(main, ["train", "--export", str(tmp_path / "export"), "--base-model", "m",
                                       "--out", str(tmp_path / "run"), "--backend-url", "http://127.0.0.1:9"],
                                env={"ILLUME_ADMIN_TOKEN": ""})
    assert result.exit_code == 1 and "admin token" in result.output
    assert not (tmp_path / "run" / "train.log").exists()  # nothing was trained
