"""The VLM core on tiny models of three real architectures, loaded like real checkpoints."""
from __future__ import annotations

import shutil

import pytest
from PIL import Image

from illume.errors import IllumeError
from illume.records import Candidate
from illume.tiny_models import ARCHITECTURES
from illume.vlm import VLM, Query, SamplingConfig, dedupe_candidates, normalise

CONFIG = SamplingConfig(temperatures=(0.3, 0.8), per_temperature=3, max_new_tokens=8, seed=7)


def queries() -> list[Query]:
    return [Query(Image.new("RGB", (48, 40), (200, 30, 30)), "what color is the circle ?", "red"),
            Query(Image.new("RGB", (64, 64), (30, 30, 200)), "is the square blue ?", "yes"),
            Query(Image.new("L", (20, 90), 128), "how many shapes are there ?", "two")]


@pytest.fixture(scope="module", params=ARCHITECTURES)
def vlm(request, tiny_model_dir) -> VLM:
    return VLM.load(str(tiny_model_dir(request.param)))


def test_sample_returns_the_asked_count_before_dedup(vlm):
    per_item = vlm.sample(queries(), CONFIG, dedupe=False)
    assert [len(c) for c in per_item] == [CONFIG.count] * 3
    temps = [c.temperature for c in per_item[0]]
    assert temps == [0.3] * 3 + [0.8] * 3
    assert all(c.score <= 0 for cands in per_item for c in cands)


def test_sample_dedupes_to_distinct_texts(vlm):
    for cands in vlm.sample(queries(), CONFIG):
        keys = [normalise(c.text) for c in cands]
        assert len(keys) == len(set(keys))
        assert all(len(k) >= 3 for k in keys)
        assert [c.score for c in cands] == sorted((c.score for c in cands), reverse=True)


def test_sampling_is_deterministic_under_a_seed(vlm):
    first = vlm.sample(queries(), CONFIG, dedupe=False)
    again = vlm.sample(queries(), CONFIG, dedupe=False)
    other = vlm.sample(queries(), SamplingConfig(**{**CONFIG.__dict__, "seed": 8}), dedupe=False)
    assert [[c.text for c in x] for x in first] == [[c.text for c in x] for x in again]
    assert [[c.text for c in x] for x in first] != [[c.text for c in x] for x in other]


def test_answer_and_explain_give_one_text_per_query(vlm):
    assert len(vlm.answer(queries())) == 3
    explained = vlm.explain(queries(), max_new_tokens=6)
    assert len(explained) == 3 and all(isinstance(t, str) for t in explained)


def test_batching_does_not_change_a_query_s_next_token_distribution(vlm):
    """Left padding + attention mask: a query's logits do not depend on its batch neighbours."""
    import torch

    def last_logits(qs):
        with torch.inference_mode():
            return vlm.model(**vlm.encode([q.image for q in qs], vlm.rationale_texts(qs))).logits[:, -1]

    alone = last_logits(queries()[:1])[0]
    batched = last_logits(queries())[0]
    assert torch.allclose(alone, batched, atol=1e-4), (alone - batched).abs().max()


def test_missing_model_directory_is_a_clear_error(tmp_path):
    with pytest.raises(IllumeError, match="does not exist"):
        VLM.load(str(tmp_path / "nope"))


def test_directory_without_config_is_refused(tmp_path):
    with pytest.raises(IllumeError, match="no config.json"):
        VLM.load(str(tmp_path))


def test_corrupt_weights_are_a_clear_error(tmp_path, tiny_model_dir):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir("llava"), broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(IllumeError, match="could not load the model"):
        VLM.load(str(broken))


def test_dedupe_keeps_best_copy_and_drops_fragments():
    cands = [Candidate("The sky is blue.", -2.0, 0.3), Candidate("the  sky is blue", -1.0, 0.8),
             Candidate("ab", -0.1, 0.3), Candidate("it is red.", -3.0, 0.3)]
    kept = dedupe_candidates(cands)
    assert [c.text for c in kept] == ["the  sky is blue", "it is red."]
