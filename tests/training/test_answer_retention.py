"""Answer retention in the job (issue 22): the answer learnt on rationale rows, warm start from the
serving adapter, and the epoch chosen on held-out scores."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoProcessor

from illume import prompts
from illume.errors import IllumeError
from illume.layout import ADAPTER_META
from training import TrainConfig, run
from training.data import IGNORE, BatchBuilder, load_export
from training.job import Trainer, choose_epoch


@pytest.mark.parametrize("arch", ["llava", "idefics3"])
def test_rationale_rows_learn_the_answer_before_the_rationale(arch, tiny_model_dir, export_dir):
    processor = AutoProcessor.from_pretrained(tiny_model_dir(arch))
    builder = BatchBuilder(processor)
    row = next(r for r in load_export(export_dir).rows if r.kind == "rationale")
    tokenizer = processor.tokenizer
    for with_answer, expected in ((True, f"{row.answer}, {prompts.RATIONALE_CONNECTIVE} {row.rationale}"),
                                  (False, row.rationale)):
        labels = builder.rows([row], 2.0, answer_in_rationale=with_answer)["labels"][0]
        learned = labels[labels != IGNORE]
        assert tokenizer.decode(learned[:-1]).strip() == expected
    if arch == "llava":  # plain prompts: the very text the rationale prompt and its target make
        prompt, target = builder.prompt_and_target(row, answer_in_rationale=True)
        assert prompt + prompts.target_text(target) == (prompts.render_rationale_prompt(processor, row.question, row.answer)
                                                       + prompts.target_text(row.rationale))


def test_the_best_epoch_within_the_accuracy_floor_is_chosen():
    epochs = [{"epoch": 1, "rouge_l": 40.0, "accuracy": 97.0}, {"epoch": 2, "rouge_l": 50.0, "accuracy": 93.0},
              {"epoch": 3, "rouge_l": 45.0, "accuracy": 96.0}]
    assert choose_epoch(epochs, "rouge_l", None)["epoch"] == 2
    assert choose_epoch(epochs, "rouge_l", 95.0)["epoch"] == 3
    assert choose_epoch(epochs, "rouge_l", 99.0)["epoch"] == 1  # none reaches it: the most accurate
    assert choose_epoch(epochs, "meteor", None) is None


def _adapter_weights(directory) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "adapter_model.safetensors"))


def test_warm_start_continues_the_served_adapter_and_the_chosen_epoch_is_kept(tmp_path, tiny_model_dir,
                                                                               make_export, eval_items):
    from peft import get_peft_model_state_dict

    base = str(tiny_model_dir("llava"))
    export = make_export(tmp_path / "export", items=4)
    first = run(TrainConfig(export=str(export), base_model=base, out=str(tmp_path / "r1"), epochs=3, batch_size=6,
                            lr=1e-2, eval_items=str(eval_items), eval_meteor=False, min_accuracy=101.0))
    meta = json.loads((first.adapter_dir / ADAPTER_META).read_text())
    scores = {e["epoch"]: e for e in meta["epoch_scores"]}
    most_accurate = max(scores.values(), key=lambda e: (e["accuracy"], e["rouge_l"], e["epoch"]))["epoch"]
    assert first.chosen_epoch == meta["chosen_epoch"] == most_accurate  # no epoch reaches 101%
    kept = _adapter_weights(first.adapter_dir)
    chosen_dir = tmp_path / "r1" / "epochs" / f"epoch_{first.chosen_epoch}"
    assert all(torch.equal(kept[k], v) for k, v in _adapter_weights(chosen_dir).items())

    warm = Trainer(TrainConfig(export=str(export), base_model=base, out=str(tmp_path / "r2"),
                               init_adapter=str(first.adapter_dir)))
    at_step_0 = get_peft_model_state_dict(warm.engine.module)
    assert set(at_step_0) == set(kept) and all(torch.equal(at_step_0[k].cpu(), kept[k]) for k in kept)
    assert any(v.requires_grad for v in warm.engine.module.parameters())
    fresh = Trainer(TrainConfig(export=str(export), base_model=base, out=str(tmp_path / "r3")))
    assert not all(torch.equal(v.cpu(), kept[k]) for k, v in get_peft_model_state_dict(fresh.engine.module).items())
    second = warm.train()
    assert json.loads((second.adapter_dir / ADAPTER_META).read_text())["init_adapter"] == str(first.adapter_dir)

    with pytest.raises(IllumeError, match="not an adapter directory"):
        Trainer(TrainConfig(export=str(export), base_model=base, out=str(tmp_path / "r4"), init_adapter=str(tmp_path)))
