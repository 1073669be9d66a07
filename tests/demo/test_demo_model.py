"""The demo model builder on a reduced size: it trains, saves atomically, caches, loads, answers."""
from __future__ import annotations

import json

import pytest

from illume import demo_model, prompts
from illume.errors import IllumeError
from illume.vlm import VLM, Query

SMALL = dict(scenes=40, steps=12, batch_size=16, test_items=6, text_hidden=64, text_layers=2,
             vision_hidden=32, vision_layers=1, vocab_size=400)


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
    settings = demo_model.DemoSettings(**{**SMALL, "scenes": 4, "explanation_fraction": 0.5})
    examples, images = demo_model.training_examples(settings, vlm.processor)
    encoded = demo_model.encode_examples(examples, vlm.processor, vlm.model.config.image_seq_length)
    assert {e.kind for e in examples} == {"qa", "rationale"}
    eos = vlm.tokenizer.eos_token_id
    for example, (ids, is_target) in zip(examples, encoded):
        first_prompt = example.turns[0][0]
        assert first_prompt.startswith("<image>")
        inference = vlm.encode([images[example.scene]], [first_prompt])["input_ids"][0].tolist()
        assert ids[: len(inference)] == inference and not any(is_target[: len(inference)])
        assert ids.count(eos) == len(example.turns) and ids[-1] == eos
        target_text = vlm.tokenizer.decode([t for t, keep in zip(ids, is_target) if keep and t != eos])
        assert target_text == "".join(target for _, target in example.turns)
        if example.kind == "rationale":
            assert first_prompt.endswith(f", {prompts.RATIONALE_CONNECTIVE}") and len(example.turns) == 1
        else:
            assert sum(p.endswith(" A:") for p, _ in example.turns) == len(example.turns) - 1  # + the caption


def test_unknown_setting_is_refused(tmp_path):
    with pytest.raises(IllumeError, match="unknown demo model setting"):
        demo_model.ensure_demo_model(tmp_path, colour="red")


def test_out_directory_holding_a_model_is_refused(built):
    _, path, _ = built
    with pytest.raises(IllumeError, match="already holds a demo model"):
        demo_model.build_demo_model(path, demo_model.DemoSettings(**SMALL))
