"""Held-out evaluation: one rationale at temperature 0.1 and the greedy answer per item."""
from __future__ import annotations

from typing import Any, Sequence

from illume import metrics
from illume.critic import DEFAULT_SCORING, PAPER_SCORING, SCORINGS, check_scoring
from illume.errors import IllumeError
from illume.images import load_local_image
from illume.records import Item
from illume.vlm import VLM, Query


BATCH_SIZE = 8  # items per generate call unless --eval-batch-size says otherwise


def evaluate(vlm: VLM, items: Sequence[Item], batch_size: int | None = None, max_new_tokens: int = 40,
             meteor: bool = True, seed: int = 0, scoring: str = DEFAULT_SCORING,
             also: Sequence[str] = SCORINGS, keep_rationales: bool = False) -> dict[str, Any]:
    """BLEU-1..4, METEOR, ROUGE-L, CIDEr of the rationales vs all references, and answer accuracy,
    scored as `scoring` says (illume.metrics); each other mode in `also` is scored too, under its
    name (by default both: {...default figures, "scoring": "default", "paper": {...}}), so every
    evaluation can be read either way (illume.metrics.scored_as).

    The answer is generated greedily from the answer prompt. The rationale explains the
    ground-truth answer (as when collecting feedback) in the default mode, and the model's
    own answer in the paper's (the reference implementation's test protocol); the second is
    generated only for items whose answer differs from the gold one. Item images are local paths.
    keep_rationales: also return every item's rationale of the first mode, in item order ("rationales").
    """
    modes = [check_scoring(scoring), *(check_scoring(m) for m in also if m != scoring)]
    batch_size = batch_size or BATCH_SIZE
    if batch_size < 1:
        raise IllumeError(f"evaluation batch size must be at least 1, got {batch_size}",
                          "Pass a positive --eval-batch-size.")
    was_training = vlm.model.training
    vlm.model.eval()
    rationales: dict[str, list[str]] = {DEFAULT_SCORING: [], PAPER_SCORING: []}
    answers: list[str] = []
    try:
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            images = [load_local_image(i.image) for i in chunk]
            own = vlm.answer([Query(image, i.question, i.answer) for image, i in zip(images, chunk)])
            answers += own
            gold = vlm.explain([Query(image, i.question, i.answer) for image, i in zip(images, chunk)],
                               temperature=0.1, max_new_tokens=max_new_tokens, seed=seed)
            rationales[DEFAULT_SCORING] += gold
            if PAPER_SCORING in modes:
                rationales[PAPER_SCORING] += _after_own_answer(vlm, images, chunk, own, gold, max_new_tokens, seed)
    finally:
        vlm.model.train(was_training)
    references = [i.explanations for i in items]
    gold_answers = [i.answer for i in items]
    scored = {mode: metrics.score_all(rationales[mode], references, answers, gold_answers, meteor=meteor, scoring=mode)
              for mode in modes}
    scores: dict[str, Any] = {**scored[modes[0]], "scoring": modes[0]}
    for mode in modes[1:]:
        scores[mode] = scored[mode]
    scores["examples"] = [{"item_id": i.item_id, "rationale": r, "answer": a}
                          for i, r, a in zip(items[:5], rationales[modes[0]], answers)]
    if keep_rationales:
        scores["rationales"] = rationales[modes[0]]
    return scores


def _after_own_answer(vlm: VLM, images: list, chunk: Sequence[Item], own: list[str], gold: list[str],
                      max_new_tokens: int, seed: int) -> list[str]:
    """Rationales after the model's own answers; where it answered the gold answer word for word,
    the rationale after the gold answer is that rationale already."""
    differ = [k for k, (item, answer) in enumerate(zip(chunk, own)) if answer != item.answer]
    texts = list(gold)
    again = vlm.explain([Query(images[k], chunk[k].question, own[k]) for k in differ], temperature=0.1,
                        max_new_tokens=max_new_tokens, seed=seed)
    for k, text in zip(differ, again):
        texts[k] = text
    return texts

