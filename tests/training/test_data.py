"""Batches from the model's own processor, label masking, and bad input refused before training."""
from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoProcessor

from illume.errors import IllumeError
from illume.layout import EXPORT_MANIFEST, EXPORT_ROWS
from training import TrainConfig, run
from training.data import IGNORE, BatchBuilder, load_export, shard_batches


@pytest.mark.parametrize("arch", ["llava", "idefics3"])
def test_labels_cover_exactly_the_target_and_eos(arch, tiny_model_dir, export_dir):
    processor = AutoProcessor.from_pretrained(tiny_model_dir(arch))
    builder = BatchBuilder(processor)
    export = load_export(export_dir)
    rows = export.rows[:3]  # answer, rationale, answer: different lengths, so padding too
    batch = builder.rows(rows, export.rationale_weight)
    tokenizer = processor.tokenizer
    image_id = tokenizer.convert_tokens_to_ids(processor.image_token)
    for row, labels, ids in zip(rows, batch["labels"], batch["input_ids"]):
        target = row.rationale if row.kind == "rationale" else row.answer
        learned = labels[labels != IGNORE]
        assert tokenizer.decode(learned[:-1]).strip() == target
        assert learned[-1] == tokenizer.eos_token_id
        assert (labels[ids == image_id] == IGNORE).all()
        assert (ids == image_id).sum() >= 4  # image tokens kept in full, never truncated
    assert batch["loss_weight"].tolist() == [1.0, export.rationale_weight, 1.0]
    assert export.rationale_weight == pytest.approx(2.0)  # 8 answer rows / 4 rationale rows


def test_shards_are_disjoint_and_equal_in_length():
    rank0 = shard_batches(10, 2, world=2, rank=0, seed=0, epoch=0)
    rank1 = shard_batches(10, 2, world=2, rank=1, seed=0, epoch=0)
    assert len(rank0) == len(rank1) == 3
    seen = [i for b in rank0 + rank1 for i in b]
    assert set(seen) == set(range(10)) and len(seen) == 12  # the tail wraps around
    assert shard_batches(10, 2, 2, 0, seed=0, epoch=1) != rank0  # reshuffled each epoch


def _config(tmp_path, export, model, **kw):
    return TrainConfig(export=str(export), base_model=str(model), out=str(tmp_path / "out"), **kw)


def test_bad_exports_are_refused_before_training(tmp_path, export_dir, tiny_model_dir):
    model = tiny_model_dir("llava")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IllumeError, match="no training rows"):
        run(_config(tmp_path, tmp_path / "empty", model))
    with pytest.raises(IllumeError, match="does not exist"):
        run(_config(tmp_path, tmp_path / "missing", model))

    rows = export_dir / EXPORT_ROWS
    good = rows.read_text()
    rows.write_text(good + "{not json\n")
    with pytest.raises(IllumeError, match="line 13: not valid JSON"):
        load_export(export_dir)
    rows.write_text(good.replace('"kind": "answer"', '"kind": "caption"', 1))
    with pytest.raises(IllumeError, match="not a valid TrainingRow"):
        load_export(export_dir)
    rows.write_text(good + good.splitlines()[0].replace('"answer": "red"', '"answer": "purple"') + "\n")
    with pytest.raises(IllumeError, match="does not match the sha256"):
        load_export(export_dir)
    rows.write_bytes(good.encode() + b'{"kind": "rationale", "target": "caf\xe9"}\n')
    with pytest.raises(IllumeError, match="line 13: not UTF-8 text"):
        load_export(export_dir)
    rows.write_text(good)
    manifest = export_dir / EXPORT_MANIFEST
    kept = manifest.read_bytes()
    for broken, message in ((b"[1]", "expected a JSON object"), (b"\xff{}", "is not UTF-8 text"),
                            (b"[" * 100_000, "nested too deeply")):
        manifest.write_bytes(broken)
        with pytest.raises(IllumeError, match=message):
            load_export(export_dir)
    manifest.write_bytes(kept)
    (export_dir / "images" / "0.png").unlink()
    with pytest.raises(IllumeError, match="image 'images/0.png' not found"):
        load_export(export_dir)


def test_dpo_without_pairs_and_gpu_on_cpu_are_refused(tmp_path, export_dir, tiny_model_dir):
    model = tiny_model_dir("llava")
    (export_dir / "preferences.jsonl").write_text("")
    with pytest.raises(IllumeError, match="--dpo needs preference pairs"):
        run(_config(tmp_path, export_dir, model, dpo=True))
    if not torch.cuda.is_available():
        with pytest.raises(IllumeError, match="CUDA is not available"):
            run(_config(tmp_path, export_dir, model, device="cuda"))
    with pytest.raises(IllumeError, match="ZeRO stage 1"):
        run(_config(tmp_path, export_dir, model, zero=1))


def test_manifest_weight_is_used_and_recomputed_when_absent(export_dir):
    manifest = json.loads((export_dir / EXPORT_MANIFEST).read_text())
    manifest["rationale_weight"] = 7.5
    (export_dir / EXPORT_MANIFEST).write_text(json.dumps(manifest))
    assert load_export(export_dir).rationale_weight == 7.5
    (export_dir / EXPORT_MANIFEST).unlink()
    assert load_export(export_dir).rationale_weight == pytest.approx(2.0)


def test_another_base_model_in_the_same_run_directory_is_refused(tmp_path, export_dir, tiny_model_dir):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "run.json").write_text(json.dumps({"base_model": str(tiny_model_dir("idefics3"))}))
    with pytest.raises(IllumeError, match="holds a run on base model"):
        run(_config(tmp_path, export_dir, tiny_model_dir("llava")))
