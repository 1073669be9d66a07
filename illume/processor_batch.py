"""How a processor wants a batch of (image, text) pairs, learnt from the processor itself.

Every prompt of ours holds exactly one image placeholder. Processors disagree on how the
images of such a batch are passed: some read a flat list (one image per prompt, in order),
others (Gemma3, Mllama, Idefics3, ...) read a flat list as ONE sample with N images and
need one list per prompt. Rather than guessing from class names, `process` asks the
processor once with two items of different sizes, remembers which layout it accepted,
and uses that for every later batch (sampling, answering, evaluation and training).
"""
from __future__ import annotations

import inspect
import threading
import weakref
from typing import Any, Sequence

from PIL import Image

from illume import prompts
from illume.errors import IllumeError

NESTED, FLAT = "nested", "flat"  # one image list per prompt | one image per prompt, in order

_layouts: "weakref.WeakKeyDictionary[Any, str]" = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def _arrange(images: Sequence[Image.Image], layout: str) -> list:
    return [[image] for image in images] if layout == NESTED else list(images)


def _accepts(processor: Any, layout: str) -> str | None:
    """None when the processor turns a 2-item batch in this layout into 2 rows; else why not."""
    images = [Image.new("RGB", (24, 32), (200, 40, 40)), Image.new("RGB", (40, 16), (40, 40, 200))]
    texts = [prompts.render_answer_prompt(processor, "what color ?"),
             prompts.render_answer_prompt(processor, "is the shape on the left ?")]
    try:
        out = processor(text=texts, images=_arrange(images, layout), return_tensors="pt", padding=True)
    except Exception as exc:  # a processor rejects a layout with whatever error it likes
        return f"{type(exc).__name__}: {exc}"
    rows = out["input_ids"].shape[0] if "input_ids" in out else None
    return None if rows == 2 else f"it returned {rows} rows of input_ids for 2 prompts"


def image_layout(processor: Any) -> str:
    """NESTED or FLAT for this processor, probed on first use and then cached."""
    with _lock:
        try:
            return _layouts[processor]
        except (KeyError, TypeError):
            pass
        # Nested first: it states "one image per prompt" unambiguously, so a processor that
        # takes it cannot misread the batch; flat is for processors that refuse nesting.
        reasons = {}
        for layout in (NESTED, FLAT):
            reasons[layout] = _accepts(processor, layout)
            if reasons[layout] is None:
                try:
                    _layouts[processor] = layout
                except TypeError:  # not weak-referenceable: probe again next time
                    pass
                return layout
    raise IllumeError(
        f"the processor {type(processor).__name__} accepts a batch of (image, prompt) pairs neither as one image "
        f"list per prompt ({reasons[NESTED]}) nor as a flat image list ({reasons[FLAT]})",
        "Use an image-text-to-text checkpoint whose processor takes text=[...] with images=[...] "
        "(one image per prompt), or report the model so its batch layout can be supported.")


def takes_suffix(processor: Any) -> bool:
    """Whether the processor takes training targets as `suffix` (PaliGemma): it then places them after
    its own end of prompt and marks them as the causally attended part of the sequence."""
    return "suffix" in inspect.signature(type(processor).__call__).parameters


def process(processor: Any, images: Sequence[Image.Image], texts: Sequence[str],
            suffixes: Sequence[str] | None = None, padding_side: str | None = None) -> dict[str, Any]:
    """processor(text=texts, images=images) as one padded batch, images laid out as it wants them.

    suffixes (only for processors that `takes_suffix`) are the training targets; the processor
    appends its end-of-sequence token to each. padding_side, when given, overrides the side the
    processor pads on by its own default (Aya Vision and Janus pad on the left whatever the
    tokenizer says). Labels a processor makes itself are dropped: inference needs none and
    training builds its own (training.data).
    """
    if len(images) != len(texts):
        raise IllumeError(f"{len(images)} images for {len(texts)} prompts",
                          "Pass exactly one image per prompt.")
    extra: dict[str, Any] = {"suffix": list(suffixes)} if suffixes is not None else {}
    if padding_side is not None:
        extra["padding_side"] = padding_side
    batch = dict(processor(text=list(texts), images=_arrange(images, image_layout(processor)),
                           return_tensors="pt", padding=True, **extra))
    batch.pop("labels", None)
    return batch
