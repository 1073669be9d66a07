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
"""
from __future__ import annotations

from typing import Any

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


def image_placeholder(processor: Any) -> str:
    """The text the processor expands into image tokens (plain-prompt models).

    PaliGemma's processor also inserts <bos> after the image and ends the prompt with a
    newline; its generated text starts after that newline.
    """
    return getattr(processor, "image_token", None) or "<image>"


def _chat_prefix(processor: Any, question: str) -> str:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
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
