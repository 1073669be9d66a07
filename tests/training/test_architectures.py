"""Training and held-out evaluation on every tiny architecture, batched, on images of mixed sizes."""
from __future__ import annotations

import json

import pytest
import torch

from illume.errors import IllumeError
from illume.tiny_models import ARCHITECTURES, TORCHVISION_ARCHITECTURES, missing_requirement
from illume.vlm import ADAPTER_META
from training import TrainConfig, run
from training.cli import parser
from training.data import IGNORE, BatchBuilder, load_export

MIXED_SIZES = ((48, 40), (20, 90), (64, 64))  # wide, tall, square: processors resize and tile them differently
ALL = [pytest.param(a, marks=pytest.mark.skipif(missing_requirement(a) is not None, reason=str(missing_requirement(a))))
       for a in ARCHITECTURES + TORCHVISION_ARCHITECTURES]


@pytest.mark.parametrize("arch", ALL)
def test_one_step_of_batch_2_and_an_evaluation_of_3_items(arch, tmp_path, tiny_model_dir, make_export, make_items):
    export = make_export(tmp_path / "export", items=2, sizes=MIXED_SIZES)  # 3 rows: answer, rationale, answer
    items = make_items(tmp_path / "eval", count=3, sizes=MIXED_SIZES)
    result = run(TrainConfig(export=str(export), base_model=str(tiny_model_dir(arch)), out=str(tmp_path / "out"),
                             batch_size=2, max_steps=1, eval_items=str(items), eval_batch_size=3,
                             eval_max_new_tokens=6, eval_meteor=False))
    assert result.steps == 1 and len(result.losses) == 1 and result.losses[0] > 0
    assert result.metrics["items"] == 3 and 0 <= result.metrics["accuracy"] <= 100
    assert len(result.metrics["examples"]) == 3
    assert json.loads((result.adapter_dir / ADAPTER_META).read_text())["steps"] == 1


@pytest.mark.parametrize("arch", ALL)
def test_a_batch_of_mixed_sizes_labels_only_each_row_s_target(arch, tiny_model_dir, tmp_path, make_export):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dir(arch))
    export = load_export(make_export(tmp_path / "export", items=2, sizes=MIXED_SIZES))
    batch = BatchBuilder(processor).rows(export.rows, export.rationale_weight)
    assert batch["input_ids"].shape[0] == len(export.rows) == 3
    for row, labels in zip(export.rows, batch["labels"]):
        target = row.rationale if row.kind == "rationale" else row.answer
        learned = labels[labels != IGNORE]
        assert processor.tokenizer.decode(learned[:-1]).strip() == target
        assert learned[-1] == processor.tokenizer.eos_token_id


def test_eval_batch_size_is_an_option_and_is_checked(tmp_path, export_dir, tiny_model_dir):
    args = vars(parser().parse_args(["--export", "e", "--base-model", "m", "--out", "o", "--eval-batch-size", "2"]))
    assert args["eval_batch_size"] == 2
    assert vars(parser().parse_args(["--export", "e", "--base-model", "m", "--out", "o"]))["eval_batch_size"] == 8
    with pytest.raises(IllumeError, match="--eval-batch-size must be at least 1"):
        run(TrainConfig(export=str(export_dir), base_model=str(tiny_model_dir("llava")), out=str(tmp_path / "out"),
                        eval_batch_size=0))


def test_a_suffix_taking_processor_marks_exactly_the_target_as_causal(tiny_model_dir, tmp_path, make_export):
    """PaliGemma attends bidirectionally wherever token_type_ids is 0: a target there would see itself."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dir("paligemma"))
    export = load_export(make_export(tmp_path / "export", items=2, sizes=MIXED_SIZES))
    batch = BatchBuilder(processor).rows(export.rows, export.rationale_weight)
    assert torch.equal(batch["token_type_ids"] == 1, batch["labels"] != IGNORE)



def test_illume_sync_train_and_loop_take_the_eval_batch_size():
    from click.testing import CliRunner

    from connector.cli import main
    from connector.training_job import training_command

    for command in ("train", "loop"):
        assert "--eval-batch-size" in CliRunner().invoke(main, [command, "--help"]).output
    args = training_command("export", "model", "out", "items.jsonl", eval_batch_size=3)
    assert args[args.index("--eval-batch-size") + 1] == "3"
    assert parser().parse_args(args[args.index("--export"):]).eval_batch_size == 3
