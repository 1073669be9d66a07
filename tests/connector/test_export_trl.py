"""The export in TRL's SFT and unpaired layouts: written from rows.jsonl and unticked.jsonl, loaded
with `datasets`, read by TRL's data utilities and trained on by TRL's SFT and KTO trainers."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.export import ExportOptions, convert
from connector.export_trl import push_to_hub, write_trl_layouts
from illume.errors import IllumeError
from illume.records import TrainingRow, read_jsonl
from illume.layout import EXPORT_PAIRS, EXPORT_TRL_SFT, EXPORT_TRL_UNPAIRED, EXPORT_UNTICKED
from tests.connector.test_export_convert import png_uri, task
from training.data import load_export


@pytest.fixture
def export(tmp_path):
    """x: both annotators tick r0 (accepted; r1, r2 unticked); y: nobody ticks s (answer-only)."""
    out = tmp_path / "export"
    convert([task("x", ["r0 is red.", "r1 is blue.", "r2 is big."], (["c0"], False), (["c0", "c2"], False)),
             task("y", ["s is round."], ([], False), image=png_uri("blue"))], out)
    return out


def test_the_export_writes_the_candidates_nobody_ticked_and_the_trainer_reads_them(export, tmp_path):
    unticked = read_jsonl(export / EXPORT_UNTICKED, TrainingRow)
    assert sorted((r.item_id, r.rationale, r.kind) for r in unticked) == [
        ("x", "r1 is blue.", "rationale"), ("x", "r2 is big.", "rationale"), ("y", "s is round.", "rationale")]
    manifest = json.loads((export / "manifest.json").read_text())
    assert manifest["counts"]["unticked_rows"] == 3 and EXPORT_UNTICKED in manifest["files"]
    loaded = load_export(export, need_unticked=True)
    assert [(r.rationale, ok) for r, ok in loaded.unpaired if ok] == [("r0 is red.", True)]
    assert len([ok for _, ok in loaded.unpaired if not ok]) == 3

    convert([task("z", ["t"], (["c0"], False))], tmp_path / "next", ExportOptions(previous=export, iteration=1))
    carried = read_jsonl(tmp_path / "next" / EXPORT_UNTICKED, TrainingRow)
    assert len(carried) == 3 and all((tmp_path / "next" / r.image).is_file() for r in carried)


def test_layouts_load_with_datasets_and_match_trls_own_unpaired_form(export):
    import datasets
    from trl.data_utils import is_conversational, unpair_preference_dataset

    assert write_trl_layouts(export) == {"sft": 2, "unpaired": 4}  # r0 + answer-only y; r0 true + 3 false
    sft = datasets.load_dataset("json", data_files=str(export / EXPORT_TRL_SFT), split="train")
    completions = sorted(row["completion"][0]["content"][0]["text"] for row in sft)
    assert completions == ["a", "a, seeing that r0 is red."]
    unpaired = datasets.load_dataset("json", data_files=str(export / EXPORT_TRL_UNPAIRED), split="train")
    assert sorted(unpaired["label"]) == [False, False, False, True]
    assert is_conversational(sft[0]) and is_conversational(unpaired[0])

    # TRL's own unpairing of preferences.jsonl gives the same columns, of the same types.
    trl_form = unpair_preference_dataset(datasets.load_dataset("json", data_files=str(export / EXPORT_PAIRS),
                                                               split="train"))
    for column in ("prompt", "completion", "label", "images"):
        assert unpaired.features[column] == trl_form.features[column], column


def test_trl_trainers_take_one_step_on_each_layout(export, tiny_model_dir, tmp_path):
    import datasets
    import trl
    from transformers import AutoModelForImageTextToText, AutoProcessor

    write_trl_layouts(export)
    model_dir = tiny_model_dir("idefics3")

    def load(name):
        dataset = datasets.load_dataset("json", data_files=str(export / name), split="train")
        dataset = dataset.map(lambda row: {"images": [str(export / image) for image in row["images"]]})
        return dataset.cast_column("images", datasets.Sequence(datasets.Image()))

    common = dict(max_steps=1, per_device_train_batch_size=2, learning_rate=1e-3, report_to=[], use_cpu=True,
                  save_strategy="no", logging_steps=1)
    sft = trl.SFTTrainer(model=AutoModelForImageTextToText.from_pretrained(model_dir),
                         args=trl.SFTConfig(output_dir=str(tmp_path / "sft"), **common), train_dataset=load(EXPORT_TRL_SFT),
                         processing_class=AutoProcessor.from_pretrained(model_dir))
    sft.train()
    assert sft.state.log_history[0]["loss"] > 0

    kto = trl.KTOTrainer(model=AutoModelForImageTextToText.from_pretrained(model_dir),
                         args=trl.KTOConfig(output_dir=str(tmp_path / "kto"), **common), train_dataset=load(EXPORT_TRL_UNPAIRED),
                         processing_class=AutoProcessor.from_pretrained(model_dir))
    kto.train()
    assert "loss" in kto.state.log_history[0]


def test_push_to_hub_dry_run_says_what_it_would_upload_and_touches_no_network(export, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # any real upload attempt would fail loudly
    result = CliRunner().invoke(main, ["export-trl", "--export", str(export), "--push-to-hub", "team/feedback",
                                       "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["rows"] == {"sft": 2, "unpaired": 4}
    assert report["hub"] == {"repo": "team/feedback", "configs": {"sft": 2, "unpaired": 4, "preference": 2},
                             "images": 2, "pushed": False}
    text = CliRunner().invoke(main, ["export-trl", "--export", str(export), "--push-to-hub", "team/feedback",
                                     "--dry-run"]).output
    assert "would push to https://huggingface.co/datasets/team/feedback: sft (2 rows)" in text
    with pytest.raises(IllumeError, match="OWNER/NAME"):
        push_to_hub(export, "no-owner", dry_run=True)


def test_an_export_without_unticked_candidates_is_refused_with_what_to_do(export):
    (export / EXPORT_UNTICKED).unlink()
    with pytest.raises(IllumeError, match="Export again"):
        write_trl_layouts(export)
