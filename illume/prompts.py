"""The prompt format of the method (SPEC section 1), in one place.

Plain-prompt models see the image placeholder followed by
    answers:     "Q: {question} A:"
    rationales:  "{question} {answer}, seeing that"
Chat-template models (SmolVLM/Idefics3, Gemma3, LLaVA-NeXT, Qwen2-VL, chat LLaVAs) get the
question as the user's turn with the image, and the assistant's turn starts with the same
continuation, so the rationale still continues "... {answer}, seeing that".

Training appends the target (answer or rationale) to exactly these prompts (PaliGemma's
processor takes it as its `suffix`, after the newline it ends every prompt with), so the
backend, the connector's evaluation and the training job can never disagree.

What goes around the question comes from what the processor declares, never from its class
name: its chat template, its image token, and whether it puts the image tokens into the text
itself (BLIP-2, InstructBLIP, Kosmos-2, Florence-2), which `writes_image_tokens` asks it once.
"""
from __future__ import annotations

import threading
import weakref
from typing import Any

from PIL import Image

RATIONALE_CONNECTIVE = "seeing that"


def answer_prompt(question: str) -> str:
    return f"Q: {question} A:"


def rationale_prompt(question: str, answer: str) -> str:
    return f"{question} {answer}, {RATIONALE_CONNECTIVE}"


def rationale_reply(answer: str, rationale: str) -> str:
    """The assistant's whole turn that explains an answer: the rationale prompt's continuation."""
    return f"{answer}, {RATIONALE_CONNECTIVE}{target_text(rationale)}"


def rationale_of_reply(answer: str, reply: str) -> str:
    """The rationale inside an assistant turn written by rationale_reply (ValueError otherwise)."""
    start = f"{answer}, {RATIONALE_CONNECTIVE} "
    if not reply.startswith(start):
        raise ValueError(f"the reply does not start with {start!r}")
    return reply[len(start):]


def uses_chat_template(processor: Any) -> bool:
    return bool(getattr(processor, "chat_template", None))


_writes_image_tokens: "weakref.WeakKeyDictionary[Any, bool]" = weakref.WeakKeyDictionary()
_probe_lock = threading.Lock()
_PROBE_TEXT = "Q: what color ? A:"


def _image_token_count(processor: Any, text: str) -> int | None:
    """How many image tokens the processor makes of text + one image; None when it refuses."""
    image = Image.new("RGB", (32, 32), (120, 60, 30))
    token_id = getattr(processor, "image_token_id", None)
    tokenizer = getattr(processor, "tokenizer", None)
    if token_id is None and getattr(processor, "image_token", None) is not None and tokenizer is not None:
        token_id = tokenizer.convert_tokens_to_ids(str(processor.image_token))
    for images in ([image], [[image]]):  # one image for one prompt, in either batch layout
        try:
            ids = processor(text=[text], images=images, return_tensors="pt")["input_ids"][0]
        except Exception:  # a processor refuses a prompt or layout with whatever error it likes
            continue
        return int((ids == token_id).sum()) if token_id is not None else 0
    return None


def writes_image_tokens(processor: Any) -> bool:
    """Whether the processor puts an image's tokens into the text itself, so that a placeholder of
    ours would be one image too many (BLIP-2 would then fail in the model, Florence-2 in the processor).

    Asked once per processor: it takes an image with a prompt that has no placeholder and gives image
    tokens for it, and a placeholder of ours adds more (or is refused). PaliGemma also takes a prompt
    without one, but reads our placeholder as that same image: it keeps the placeholder.
    """
    with _probe_lock:
        try:
            return _writes_image_tokens[processor]
        except (KeyError, TypeError):
            pass
        without = _image_token_count(processor, _PROBE_TEXT)
        if without is None:
            writes = False
        else:
            marker = getattr(processor, "image_token", None)
            with_ours = _image_token_count(processor, f"{marker}{_PROBE_TEXT}") if marker else None
            writes = marker is None or with_ours is None or with_ours > without
        try:
            _writes_image_tokens[processor] = writes
        except TypeError:  # not weak-referenceable: probe again next time
            pass
        return writes


def image_placeholder(processor: Any) -> str:
    """The text the processor expands into image tokens (plain-prompt models); empty for a processor
    that writes them itself.

    PaliGemma's processor also inserts <bos> after the image and ends the prompt with a
    newline; its generated text starts after that newline.
    """
    if writes_image_tokens(processor):
        return ""
    return getattr(processor, "image_token", None) or "<image>"


def _chat_prefix(processor: Any, question: str) -> str:
    image = [] if writes_image_tokens(processor) else [{"type": "image"}]
    messages = [{"role": "user", "content": image + [{"type": "text", "text": question}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def render_answer_prompt(processor: Any, question: str) -> str:
    """The full model input text (image placeholder included) for answering."""
    if uses_chat_template(processor):
        return _chat_prefix(processor, question)
    return f"{image_placeholder(processor)}{answer_prompt(question)}"


def render_rationale_prompt(processor: Any, question: str, answer: str) -> str:
    """The full model input text (image placeholder included) for explaining an answer."""
    if uses_chat_template(processor):
        return f"{_chat_prefix(processor, question)}{answer}, {RATIONALE_CONNECTIVE}"
    return f"{image_placeholder(processor)}{rationale_prompt(question, answer)}"


def target_text(text: str) -> str:
    """How a target (answer or rationale) is appended to its prompt when training."""
    return " " + text.strip()


def first_sentence(text: str) -> str:
    """Cut a generated continuation at the end of its first sentence."""
    text = " ".join(text.split())
    for index, char in enumerate(text):
        if char in ".!?" and (index + 1 == len(text) or text[index + 1] == " "):
            return text[: index + 1]
    return text
