"""The job in one process with real DeepSpeed on the tiny models: loss, adapter, DPO."""
from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from illume.errors import IllumeError
from illume.layout import ADAPTER_META, EXPORT_ROWS
from illume.vlm import VLM, Query
from training import TrainConfig, run
from training.data import BatchBuilder, load_export, model_inputs
from training.losses import sequence_logprobs


@pytest.mark.parametrize("arch", ["llava", "idefics3"])
def test_a_few_steps_lower_the_loss_on_a_fixed_batch(arch, tmp_path, tiny_model_dir, make_export):
    export = make_export(tmp_path / "export", items=4)  # 6 rows: one batch, the same every step
    result = run(TrainConfig(export=str(export), base_model=str(tiny_model_dir(arch)), out=str(tmp_path / "out"),
                             epochs=8, batch_size=6, lr=1e-2, seed=1))
    assert result.steps == 8 and len(result.losses) == 8
    assert result.losses[-1] < result.losses[0] - 0.5, result.losses


def test_saved_adapter_loads_through_vlm_and_changes_the_output(tmp_path, tiny_model_dir, eval_items, make_export):
    base = str(tiny_model_dir("llava"))
    export = make_export(tmp_path / "export", items=4)
    result = run(TrainConfig(export=str(export), base_model=base, out=str(tmp_path / "out"), epochs=3,
                             batch_size=6, lr=1e-2, version="round-1", eval_items=str(eval_items), eval_meteor=False))
    meta = json.loads((result.adapter_dir / ADAPTER_META).read_text())
    assert meta["base_model"] == base and meta["version"] == "round-1" and meta["steps_total"] == 3
    assert meta["steps"] == meta["chosen_epoch"] == result.chosen_epoch  # one step per epoch; the chosen one kept
    assert meta["data_manifest_sha256"] == load_export(export).manifest_sha256
    assert meta["metrics"]["items"] == 4 and "cider" in meta["metrics"]
    epochs = sorted(p.name for p in (tmp_path / "out" / "eval").iterdir())
    assert epochs == ["epoch_1.json", "epoch_2.json", "epoch_3.json"]

    plain = VLM.load(base)
    tuned = VLM.load(base, adapter=str(result.adapter_dir))
    assert tuned.version == "round-1"
    query = [Query(Image.new("RGB", (40, 40), "red"), "what color is the square ?", "red")]
    with torch.no_grad():
        inputs = plain.encode([query[0].image], plain.answer_texts(query))
        delta = (tuned.model(**inputs).logits - plain.model(**inputs).logits).abs().max()
    assert delta > 1e-3
    with pytest.raises(IllumeError, match="trained on"):
        VLM.load(str(tiny_model_dir("idefics3")), adapter=str(result.adapter_dir))


def _margin(vlm: VLM, export_dir) -> float:
    """Mean log p(chosen) - log p(rejected) over the export's preference pairs."""
    export = load_export(export_dir, need_pairs=True)
    batch = BatchBuilder(vlm.processor).pairs(export.pairs)
    with torch.no_grad():
        logp, _ = sequence_logprobs(vlm.model(**model_inputs(batch)).logits, batch["labels"])
    n = len(export.pairs)
    return float((logp[:n] - logp[n:]).mean())


def test_dpo_raises_the_chosen_minus_rejected_margin(tmp_path, tiny_model_dir, make_export):
    base = str(tiny_model_dir("llava"))
    export = make_export(tmp_path / "export", items=4, with_manifest=False)
    (export / EXPORT_ROWS).unlink()  # DPO alone, so only the preference loss moves the weights
    result = run(TrainConfig(export=str(export), base_model=base, out=str(tmp_path / "out"), epochs=4,
                             batch_size=4, lr=1e-2, dpo=True, dpo_beta=0.1, dpo_length_norm=False))  # summed, as measured
    before = _margin(VLM.load(base), export)
    after = _margin(VLM.load(base, adapter=str(result.adapter_dir)), export)
    assert after > before + 1.0, (before, after)
    assert json.loads((result.adapter_dir / ADAPTER_META).read_text())["dpo"] is True


def test_gradient_accumulation_counts_optimizer_steps(tmp_path, tiny_model_dir, make_export):
    export = make_export(tmp_path / "export", items=4)  # 6 rows -> 2 micro-batches of 3 per epoch
    result = run(TrainConfig(export=str(export), base_model=str(tiny_model_dir("llava")), out=str(tmp_path / "out"),
                             epochs=3, batch_size=3, grad_accum=2, warmup_steps=1))
    assert result.steps == 3 and len(result.losses) == 3 and len(result.micro_seconds) == 6
