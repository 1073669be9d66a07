"""preferences.jsonl is TRL's vision DPO layout: TRL's own data utilities read it as it is,
one DPOTrainer step runs on it with a tiny chat-template VLM, and our trainer reads it back."""
from __future__ import annotations

import json

import pytest

from connector.export_writer import to_line
from illume.records import PreferencePair, to_json
from illume.layout import EXPORT_PAIRS
from training.data import load_export


def test_preferences_load_in_trl_and_train_one_dpo_step(export_dir, tiny_model_dir, tmp_path):
    import datasets
    import trl
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl.data_utils import is_conversational

    line = json.loads((export_dir / EXPORT_PAIRS).read_text().splitlines()[0])
    assert line["prompt"] == [{"role": "user", "content": [{"type": "image"},
                                                           {"type": "text", "text": "what color is the square ?"}]}]
    assert line["chosen"] == [{"role": "assistant",
                               "content": [{"type": "text", "text": "red, seeing that the square is red."}]}]
    assert line["images"] == ["images/0.png"]
    pair = PreferencePair.from_json_object(line)
    assert json.loads(to_line(pair)) == json.loads(to_json(pair)) == line  # the export writes the same form

    ours = load_export(export_dir).pairs  # our trainer reads the rationales back exactly
    assert (ours[0].chosen, ours[0].rejected) == ("the square is red.", "there are two dogs on grass.")

    dataset = datasets.load_dataset("json", data_files=str(export_dir / EXPORT_PAIRS), split="train")
    dataset = dataset.map(lambda row: {"images": [str(export_dir / image) for image in row["images"]]})
    dataset = dataset.cast_column("images", datasets.Sequence(datasets.Image()))
    assert is_conversational(dataset[0]) and dataset[0]["images"][0].size[0] > 0

    model_dir = tiny_model_dir("idefics3")
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    before = {name: value.detach().clone() for name, value in model.named_parameters()}
    args = trl.DPOConfig(output_dir=str(tmp_path / "dpo"), max_steps=1, per_device_train_batch_size=2,
                         learning_rate=1e-3, report_to=[], use_cpu=True, save_strategy="no", logging_steps=1)
    trainer = trl.DPOTrainer(model=model, args=args, train_dataset=dataset,
                             processing_class=AutoProcessor.from_pretrained(model_dir))
    trainer.train()
    logged = trainer.state.log_history[0]
    assert logged["loss"] == pytest.approx(0.6931, abs=1e-3)  # step 1: policy == reference, loss = ln 2
    assert logged["logps/chosen"] < 0 and "rewards/margins" in logged
    assert any(not value.equal(before[name]) for name, value in model.named_parameters())
