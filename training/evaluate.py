"""Held-out evaluation: one rationale at temperature 0.1 and the greedy answer per item."""
from __future__ import annotations

from typing import Any, Sequence

from illume import metrics
from illume.errors import IllumeError
from illume.images import load_local_image
from illume.records import Item
from illume.vlm import VLM, Query


BATCH_SIZE = 8  # items per generate call unless --eval-batch-size says otherwise


def evaluate(vlm: VLM, items: Sequence[Item], batch_size: int | None = None, max_new_tokens: int = 40,
             meteor: bool = True, seed: int = 0) -> dict[str, Any]:
    """BLEU-1..4, METEOR, ROUGE-L, CIDEr of the rationales vs all references, and answer accuracy.

    The rationale explains the ground-truth answer (as when collecting feedback); the
    answer is generated separately from the answer prompt. Item images are local paths.
    """
    batch_size = batch_size or BATCH_SIZE
    if batch_size < 1:
        raise IllumeError(f"evaluation batch size must be at least 1, got {batch_size}",
                          "Pass a positive --eval-batch-size.")
    was_training = vlm.model.training
    vlm.model.eval()
    rationales: list[str] = []
    answers: list[str] = []
    try:
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            queries = [Query(load_local_image(i.image), i.question, i.answer) for i in chunk]
            rationales += vlm.explain(queries, temperature=0.1, max_new_tokens=max_new_tokens, seed=seed)
            answers += vlm.answer(queries)
    finally:
        vlm.model.train(was_training)
    scores = metrics.score_all(rationales, [i.explanations for i in items], answers,
                               [i.answer for i in items], meteor=meteor)
    scores["examples"] = [{"item_id": i.item_id, "rationale": r, "answer": a}
                          for i, r, a in zip(items[:5], rationales, answers)]
    return scores
