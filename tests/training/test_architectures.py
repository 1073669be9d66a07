"""Training and held-out evaluation on every tiny architecture, batched, on images of mixed sizes."""
from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors import safe_open

from illume import processor_batch, prompts
from illume.errors import IllumeError
from illume.images import load_local_image
from illume.tiny_models import ARCHITECTURES, TORCHVISION_ARCHITECTURES, missing_requirement
from illume.layout import ADAPTER_META
from illume.vlm import VLM
from training import TrainConfig, run
from training.cli import parser
from training.data import IGNORE, BatchBuilder, load_export, target_span

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
    with safe_open(str(result.adapter_dir / "adapter_model.safetensors"), "pt") as adapter:
        saved = list(adapter.keys())
    assert saved and not [k for k in saved if "lm_head" in k or "embed_tokens" in k], saved  # no head, no embeddings


def learnt_texts(builder: BatchBuilder, batch: dict) -> list[str]:
    """Exactly what each row's labels teach, decoded (special tokens kept)."""
    return [builder.tokenizer.decode(labels[labels != IGNORE]) for labels in batch["labels"]]


@pytest.mark.parametrize("arch", ALL)
def test_exactly_the_target_and_the_end_token_are_learnt(arch, tiny_model_dir, tmp_path, make_export):
    """Whatever side the processor pads on and whatever it adds around the text (Chameleon's separator,
    BLIP-2's query tokens, Florence-2's encoder prompt), an answer row, a rationale row and a preference
    pair learn their target's tokens and the end token, nothing else."""
    vlm = VLM.load(str(tiny_model_dir(arch)), device="cpu")
    builder = BatchBuilder(copy.deepcopy(vlm.processor), decoder_start=vlm.decoder_start)
    export = load_export(make_export(tmp_path / "export", items=2, sizes=MIXED_SIZES))
    assert [r.kind for r in export.rows] == ["answer", "rationale", "answer"]  # one batch, images of mixed sizes
    eos = builder.tokenizer.eos_token
    learnt = learnt_texts(builder, builder.rows(export.rows, export.rationale_weight))
    learnt += learnt_texts(builder, builder.pairs(export.pairs[1:]))
    # The training default: the rationale row learns its answer too ("red, seeing that ...").
    learnt += learnt_texts(builder, builder.rows(export.rows[1:2], export.rationale_weight, answer_in_rationale=True))
    print(arch, learnt)  # pytest -s shows the decoded learnt tokens per architecture
    if vlm.decoder_start is None:  # a decoder-only model learns them right after the prompt as it is sampled
        batch = builder.rows(export.rows, export.rationale_weight)
        for row, image in enumerate(load_local_image(r.image) for r in export.rows):
            prompt = processor_batch.process(builder.processor, [image], [builder.prompt_and_target(export.rows[row])[0]])
            real = batch["attention_mask"][row].bool()
            learnt_here = batch["labels"][row][real] != IGNORE
            assert batch["input_ids"][row][real][~learnt_here].tolist() == prompt["input_ids"][0].tolist()
            assert learnt_here[-int(learnt_here.sum()):].all()  # the learnt tokens end the row
    rationale = export.rows[1]
    assert learnt == [f" {export.rows[0].answer}{eos}", f" {rationale.rationale}{eos}",
                      f" {export.rows[2].answer}{eos}", f" {export.pairs[1].chosen}{eos}",
                      f" {export.pairs[1].rejected}{eos}",
                      f" {prompts.rationale_reply(rationale.answer, rationale.rationale)}{eos}"]


def test_target_span_skips_the_prompt_and_what_the_processor_adds_after_every_text():
    prompt = [1, 7, 7, 5, 9]  # bos, image, image, "A:", separator the processor appends
    assert target_span([1, 7, 7, 5, 3, 4, 2, 9], prompt) == (4, 7)  # target 3 4, eos 2
    assert target_span([1, 7, 7, 5, 3, 9, 2, 9], prompt) == (4, 7)  # a target token equal to the separator
    assert target_span([1, 7, 7, 6, 3, 2], [1, 7, 7, 5]) == (3, 6)  # merged across the seam: from the merge on


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


def test_the_q_former_reads_the_prompt_never_the_target(tmp_path, make_export):
    """InstructBLIP's processor tokenizes the whole text for its Q-Former too: there the target would
    be an input of the very tokens it is learnt on. Training gives it the prompt, as sampling does."""
    from illume.tiny_models import build_tiny_model

    vlm = VLM.load(str(build_tiny_model("instructblip", tmp_path / "instructblip")), device="cpu")
    export = load_export(make_export(tmp_path / "export", items=2, sizes=MIXED_SIZES))
    builder = BatchBuilder(copy.deepcopy(vlm.processor))
    batch = builder.rows(export.rows, export.rationale_weight)
    qformer = vlm.processor.qformer_tokenizer
    read = [qformer.decode(ids[mask.bool()]) for ids, mask in zip(batch["qformer_input_ids"],
                                                                  batch["qformer_attention_mask"])]
    assert read == [builder.prompt(r.question, r.answer, r.kind) for r in export.rows]
    assert learnt_texts(builder, batch)[1] == f" {export.rows[1].rationale}{builder.tokenizer.eos_token}"
