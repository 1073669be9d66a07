"""The demo model builder on a reduced size: it trains, saves atomically, caches, loads, answers."""
from __future__ import annotations

import json

import dataclasses

import pytest
import torch

from illume import demo_model, prompts
from illume.datasets import shapes
from illume.errors import IllumeError
from illume.vlm import VLM, Query

SMALL = dict(scenes=40, steps=12, batch_size=16, test_items=6, text_hidden=64, text_layers=2,
             vision_hidden=32, vision_layers=1, vocab_size=400, vision_steps=10)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    cache = tmp_path_factory.mktemp("demo-cache")
    lines: list[str] = []
    path = demo_model.ensure_demo_model(cache, seed=1, progress=lines.append, **SMALL)
    return cache, path, lines


def test_builds_a_loadable_llava_that_answers(built):
    _, path, lines = built
    assert (path / "config.json").is_file() and (path / "processor_config.json").is_file()
    assert json.loads((path / "config.json").read_text())["model_type"] == "llava"
    assert any(line.startswith("step 12/12") for line in lines)  # progress was reported
    vlm = VLM.load(str(path), device="cpu")
    items = demo_model.test_items(demo_model.DemoSettings(test_items=2))
    queries = [Query(image, item.question, item.answer) for item, image in items]
    answers = vlm.answer(queries)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    assert len(vlm.sample(queries[:1])) == 1


def test_metrics_and_settings_are_written_next_to_the_model(built):
    _, path, _ = built
    metrics = demo_model.read_metrics(path)
    assert metrics["items"] == SMALL["test_items"]
    for key in ("accuracy", "rouge_l"):
        assert 0.0 <= metrics[key] <= 100.0
    assert 0.0 <= metrics["accepted_among_10"] <= 1.0 and metrics["cider"] >= 0.0
    settings = json.loads((path / demo_model.SETTINGS_FILE).read_text())
    assert settings["steps"] == SMALL["steps"] and settings["seed"] == 1
    assert settings["final_loss"] < settings["first_loss"]  # it learned something


def test_second_call_reuses_the_cached_model(built, monkeypatch):
    cache, path, _ = built

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the cached model was rebuilt")

    monkeypatch.setattr(demo_model, "build_demo_model", no_rebuild)
    assert demo_model.ensure_demo_model(cache, seed=1, **SMALL) == path
    assert not [p for p in cache.iterdir() if p.name.endswith(".building")]  # temp dir renamed, none left


def test_other_settings_get_another_cache_entry():
    base = demo_model.DemoSettings(**SMALL)
    assert base.key() != demo_model.DemoSettings(**{**SMALL, "seed": 2}).key()
    assert base.key() == demo_model.DemoSettings(**SMALL).key()


def test_training_tokens_match_what_the_processor_feeds_at_inference(built):
    _, path, _ = built
    vlm = VLM.load(str(path), device="cpu")
    settings = demo_model.DemoSettings(**{**SMALL, "scenes": 4, "explanation_fraction": 0.5, "remark_fraction": 0})
    examples, images, _ = demo_model.training_examples(settings, vlm.processor)
    encoded = demo_model.encode_examples(examples, vlm.processor, vlm.model.config.image_seq_length)
    assert {e.kind for e in examples} == {"caption", "inventory", "answer", "rationale"}
    remarks = demo_model.training_examples(dataclasses.replace(settings, explanation_fraction=0, remark_fraction=1),
                                           vlm.processor)[0]
    assert {e.kind for e in remarks} == {"caption", "inventory", "answer", "remark"}
    eos = vlm.tokenizer.eos_token_id
    for example, (ids, is_target) in zip(examples, encoded):
        assert example.prompt.startswith("<image>")
        inference = vlm.encode([images[example.scene]], [example.prompt])["input_ids"][0].tolist()
        assert ids[: len(inference)] == inference and not any(is_target[: len(inference)])
        assert all(is_target[len(inference):]) and ids.count(eos) == 1 and ids[-1] == eos
        assert vlm.tokenizer.decode(ids[len(inference):-1]) == example.target
        if example.kind == "rationale":
            assert example.prompt.endswith(f", {prompts.RATIONALE_CONNECTIVE}")
        elif example.kind == "answer":
            assert example.prompt.endswith(" A:") and example.prompt.count("Q:") == 1  # one question per sequence


def test_unknown_setting_is_refused(tmp_path):
    with pytest.raises(IllumeError, match="unknown demo model setting"):
        demo_model.ensure_demo_model(tmp_path, colour="red")


def test_out_directory_holding_a_model_is_refused(built):
    _, path, _ = built
    with pytest.raises(IllumeError, match="already holds a demo model"):
        demo_model.build_demo_model(path, demo_model.DemoSettings(**SMALL))


@pytest.fixture(scope="module")
def vision_stage():
    """An untrained demo model whose vision tower (of the default size) went through stage 1,
    and its scenes."""
    default = demo_model.DemoSettings()
    settings = demo_model.DemoSettings(**{**SMALL, "vision_steps": 400, "vision_hidden": default.vision_hidden,
                                          "vision_layers": default.vision_layers})
    torch.manual_seed(0)
    model, processor = demo_model.build_untrained(settings)
    rng = shapes.split_rng(0, "train")
    scenes = [shapes.make_scene(rng) for _ in range(2000)]  # fewer overfit: held-out accuracy falls
    pixels = processor.image_processor([shapes.render(s) for s in scenes], return_tensors="pt")["pixel_values"]
    before = demo_model.pretrain_vision(model, pixels, scenes, dataclasses.replace(settings, vision_steps=0))
    after = demo_model.pretrain_vision(model, pixels, scenes, settings)
    return model, processor, scenes, before, after


def test_vision_stage_teaches_the_tower_what_each_patch_shows(vision_stage):
    *_, before, after = vision_stage
    # kind, colour, size, row and column of a held-out shape, all right: chance is about 1 in 1,400
    assert before["vision_shape_accuracy"] < 5 and after["vision_shape_accuracy"] >= 90, (before, after)


def _word_finds_its_patch(model, processor, scenes) -> int:
    """In how many scenes the first attention layer, at the word " <kind>", weighs that shape's
    patch highest among the patches that show a shape."""
    model.config.text_config._attn_implementation = "eager"  # only eager returns attention weights
    hits = 0
    for scene in scenes:
        target = scene["shapes"][0]
        batch = processor(images=[shapes.render(scene)], text=[f"<image>Q: What color is the {target['kind']}? A:"],
                          return_tensors="pt")
        with torch.no_grad():
            out = model(**batch, output_attentions=True)
        ids = batch["input_ids"][0].tolist()
        word = ids.index(processor.tokenizer(f" {target['kind']}", add_special_tokens=False)["input_ids"][0])
        first_patch = ids.index(model.config.image_token_index)
        cells = [s["row"] * shapes.GRID + s["col"] for s in scene["shapes"]]
        weights = out.attentions[0][0, :, word, first_patch: first_patch + shapes.GRID ** 2].mean(0)
        hits += max(cells, key=lambda c: weights[c]) == cells[0]
    return hits


def test_grounded_words_attend_to_the_patch_that_shows_them(vision_stage):
    model, processor, scenes, _, _ = vision_stage
    held_out = scenes[-40:]
    before = _word_finds_its_patch(model, processor, held_out)
    tied = demo_model.ground_words(model, processor.tokenizer)
    after = _word_finds_its_patch(model, processor, held_out)
    assert set(shapes.KINDS) <= set(tied)
    # the language model is untrained: only the grounding makes "square" look at the square
    assert after >= 0.8 * len(held_out) and after - before >= 0.25 * len(held_out), (before, after)


def test_stages_report_start_rate_eta_and_end_from_the_first_second():
    now = [100.0]
    lines: list[str] = []
    stages = demo_model.Stages(lines.append, every=30.0, clock=lambda: now[0])
    stages.start("scenes", 8000, "scenes", "drawing 8000 scenes")
    assert lines == ["[scenes] drawing 8000 scenes (build time so far 0s)"]  # said at once, before any work
    for _ in range(2000):  # 2000 scenes in 10 s: one line after the 30 s throttle would be due, none before
        now[0] += 0.005
        stages.advance()
    assert len(lines) == 1
    now[0] += 30.0
    stages.advance()  # 2001 scenes in 40 s: 50 per second, 5999 left -> 120 s
    assert lines[-1] == "[scenes] 2001/8000 scenes  50 scenes/s, 40s elapsed, ~2m00s left"
    stages.advance(5999)  # the last unit always reports
    assert lines[-1].startswith("[scenes] 8000/8000 scenes")
    assert stages.end("48000 sequences") == pytest.approx(40.0) and lines[-1] == "[scenes] done in 40s: 48000 sequences"
    stages.start("language", 10, "steps")
    stages.advance(prefix="step 1/10", note="loss 4.000")
    assert lines[-1] == "[language] 10 steps (build time so far 40s)" and len(lines) == 5  # step 1: throttled
    now[0] += 31.0
    stages.advance(prefix="step 2/10", note="loss 3.000")
    assert lines[-1] == "step 2/10  loss 3.000  0.0645 steps/s, 31s elapsed, ~2m04s left"


def test_a_build_reports_every_stage_even_when_not_on_a_terminal(built):
    _, _, lines = built
    for stage in ("tokenizer", "scenes", "pixels", "tokens", "vision", "language", "measure"):
        assert any(line.startswith(f"[{stage}] done in") for line in lines), stage
    assert lines[0].startswith("building the demo model into") and "about 10 minutes" in lines[1]


def test_a_build_runs_on_one_thread_and_gives_the_same_model_each_time(tmp_path):
    """Float sums split across threads round differently, so a build's thread count would pick the
    model (and the demo's figures); the builder uses one thread and gives the caller's setting back."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    seen: list[int] = []
    try:
        paths = [demo_model.build_demo_model(tmp_path / f"build-{n}", demo_model.DemoSettings(**SMALL),
                                             lambda _: seen.append(torch.get_num_threads())) for n in (1, 2)]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert seen and set(seen) == {1}
    first, second = ((p / "model.safetensors").read_bytes() for p in paths)
    assert first == second
