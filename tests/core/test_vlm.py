"""The VLM core on tiny models of every built architecture, loaded like real checkpoints, batched."""
from __future__ import annotations

import shutil

import pytest
from PIL import Image

from illume.errors import IllumeError
from illume.records import Candidate
from illume.tiny_models import ARCHITECTURES, TORCHVISION_ARCHITECTURES, missing_requirement
from illume.text import normalise
from illume.vlm import VLM, Query, SamplingConfig, dedupe_candidates

ALL = [pytest.param(a, marks=pytest.mark.skipif(missing_requirement(a) is not None, reason=str(missing_requirement(a))))
       for a in ARCHITECTURES + TORCHVISION_ARCHITECTURES]
CONFIG = SamplingConfig(temperatures=(0.3, 0.8), per_temperature=3, max_new_tokens=8, seed=7)


def queries() -> list[Query]:
    return [Query(Image.new("RGB", (48, 40), (200, 30, 30)), "what color is the circle ?", "red"),
            Query(Image.new("RGB", (64, 64), (30, 30, 200)), "is the square blue ?", "yes"),
            Query(Image.new("L", (20, 90), 128), "how many shapes are there ?", "two")]


@pytest.fixture(scope="module", params=ALL)
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


def texts(per_item) -> list[list[str]]:
    return [[c.text for c in cands] for cands in per_item]


def test_a_querys_candidates_do_not_depend_on_its_batch(vlm):
    """The backend batches tasks as their images arrive: a task's candidates must not change with that."""
    together = texts(vlm.sample(queries(), CONFIG, dedupe=False))
    alone = [texts(vlm.sample([q], CONFIG, dedupe=False))[0] for q in queries()]
    reversed_ = texts(vlm.sample(queries()[::-1], CONFIG, dedupe=False))[::-1]
    assert together == alone == reversed_


def test_the_key_not_the_position_picks_the_draws(vlm):
    same = queries()[0]
    keyed = [Query(same.image, same.question, same.answer, key=k) for k in ("task-1", "task-2", "task-1")]
    first, second, third = texts(vlm.sample(keyed, CONFIG, dedupe=False))
    assert first == third != second  # same content: the key alone tells the draws apart


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


def test_every_architecture_gets_a_layout_that_keeps_one_image_per_prompt(vlm):
    """The probed layout turns 3 prompts of mixed image sizes into 3 rows, each with its own image."""
    from illume import processor_batch

    layout = processor_batch.image_layout(vlm.processor)
    assert layout in (processor_batch.NESTED, processor_batch.FLAT)
    assert processor_batch.image_layout(vlm.processor) == layout  # cached, not probed again
    batch = vlm.encode([q.image for q in queries()], vlm.answer_texts(queries()))
    assert batch["input_ids"].shape[0] == 3 and "labels" not in batch


class _FlatOnly:
    """A processor of the older kind that refuses one image list per prompt (none of ours does)."""

    def __init__(self, processor):
        self.inner = processor
        self.chat_template = processor.chat_template
        self.image_token = getattr(processor, "image_token", None)

    def apply_chat_template(self, *args, **kwargs):
        return self.inner.apply_chat_template(*args, **kwargs)

    def __call__(self, text, images, **kwargs):
        if isinstance(images[0], list):
            raise ValueError("images must be a flat list")
        return self.inner(text=text, images=images, **kwargs)


class _Refusing(_FlatOnly):
    def __call__(self, text, images, **kwargs):
        raise TypeError("no batches today")


def test_layout_comes_from_behaviour_not_the_class_name(tiny_model_dir):
    from transformers import AutoProcessor

    from illume import processor_batch

    real = AutoProcessor.from_pretrained(tiny_model_dir("llava"))
    assert processor_batch.image_layout(_FlatOnly(real)) == processor_batch.FLAT
    batch = processor_batch.process(_FlatOnly(real), [q.image.convert("RGB") for q in queries()],
                                    [f"{real.image_token}Q: {q.question} A:" for q in queries()])
    assert batch["input_ids"].shape[0] == 3
    with pytest.raises(IllumeError, match="neither as one image list per prompt .*TypeError: no batches today"):
        processor_batch.image_layout(_Refusing(real))
    with pytest.raises(IllumeError, match="2 images for 1 prompts"):
        processor_batch.process(real, [q.image for q in queries()[:2]], ["x"])


@pytest.mark.parametrize("arch, writes", [("blip2", True), ("florence2", True), ("llava", False), ("paligemma", False),
                                          ("idefics2", False)])
def test_the_image_placeholder_follows_what_the_processor_does(arch, writes, tiny_model_dir):
    """BLIP-2 and Florence-2 put the image tokens into the text themselves: a placeholder of ours would be
    one image too many. PaliGemma could do it too, but reads our placeholder as the same image."""
    from transformers import AutoProcessor

    from illume import prompts

    processor = AutoProcessor.from_pretrained(tiny_model_dir(arch))
    assert prompts.writes_image_tokens(processor) is writes
    for text in (prompts.render_answer_prompt(processor, "what color ?"),
                 prompts.render_rationale_prompt(processor, "what color ?", "red")):
        assert (str(processor.image_token) in text) is not writes, text
