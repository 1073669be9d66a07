"""benchmarks/data_efficiency.py's feedback cache: other training recipes may reuse complete feedback,
never feedback sampled or judged otherwise, nor a partial cache (the loop would mix two recipes)."""
import argparse
import json
from pathlib import Path

import pytest

from illume.errors import IllumeError
from illume.records import Feedback


@pytest.fixture
def module(load_benchmark):
    return load_benchmark("data_efficiency")


def args(cache: Path, **changes) -> argparse.Namespace:
    values = dict(seed=0, feedback_items=2, per_temperature=10, own_temperature=0.3, covered_per_temperature=None,
                  remedy="base", critic="auto", critic_threshold=None, scoring="default", lr=1e-3, epochs=15,
                  batch_size=8, lora_rank=8, answer_in_rationale=True, answer_pool_ratio=10.0, warm_start=False,
                  select_epoch=True, val_items=40, iterations=2, feedback_cache=str(cache))
    return argparse.Namespace(**(values | changes))


def fill(module, cache: Path, base: Path, iterations: list[int]) -> None:
    for it in iterations:
        record = Feedback(f"item-{it}", "x.png", "What colour is the square?", "blue", ["it is blue."],
                          accepted=["it is blue."], rejected=[], iteration=it)
        module.cache_feedback(args(cache), base, it, [record], {"candidates_per_item": 1.0})


def test_other_training_reuses_complete_feedback_only(module, tmp_path):
    cache, base = tmp_path / "cache", tmp_path / "model"
    fill(module, cache, base, [1, 2])
    same = module.cached_feedbacks(args(cache), base)
    assert [f.item_id for f in same[1][0]] == ["item-1"] and same[3] is None
    other_recipe = module.cached_feedbacks(args(cache, warm_start=True, lr=3e-4), base)
    assert other_recipe[2][0][0].accepted == ["it is blue."]
    with pytest.raises(IllumeError, match="per_temperature"):
        module.cached_feedbacks(args(cache, per_temperature=5), base)
    with pytest.raises(IllumeError, match="model"):
        module.cached_feedbacks(args(cache), tmp_path / "other-model")


def test_partial_cache_is_refused_to_another_recipe(module, tmp_path):
    cache, base = tmp_path / "cache", tmp_path / "model"
    fill(module, cache, base, [1])
    assert module.cached_feedbacks(args(cache), base)[2] is None  # the same recipe goes on sampling
    with pytest.raises(IllumeError, match="warm_start"):
        module.cached_feedbacks(args(cache, warm_start=True), base)


@pytest.mark.parametrize("key, other", [("own_temperature", 0.6), ("covered_per_temperature", 1)])
def test_cache_from_before_a_sampling_key_holds_its_default(module, tmp_path, key, other):
    cache, base = tmp_path / "cache", tmp_path / "model"
    fill(module, cache, base, [1, 2])
    settings = cache / "settings.json"
    stored = json.loads(settings.read_text())
    del stored[key]
    settings.write_text(json.dumps(stored))
    assert module.cached_feedbacks(args(cache), base)[1] is not None
    with pytest.raises(IllumeError, match=key):
        module.cached_feedbacks(args(cache, **{key: other}), base)
