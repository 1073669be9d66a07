"""The trained model: the base VLM, frozen, with LoRA adapters on its language model."""
from __future__ import annotations

import hashlib
import re
from typing import Any

import torch
from torch import nn

from illume.errors import IllumeError

# Vision-to-text projectors of the architectures we load (LLaVA, Idefics3/SmolVLM, Qwen2-VL, PaliGemma).
PROJECTOR_NAMES = ("multi_modal_projector", "connector", "merger", "mm_projector")


def language_model_prefix(model: nn.Module) -> str:
    """Module path of the text decoder inside a VLM (e.g. "model.language_model")."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    for name, module in model.named_modules():
        if decoder is not None and module is decoder and name:
            return name
    for name, _ in model.named_modules():
        if name.endswith(("language_model", "text_model")):
            return name
    raise IllumeError(f"cannot find the language model inside {type(model).__name__}",
                      "Use an image-text-to-text model whose decoder transformers exposes via get_decoder().")


def lora_target_regex(model: nn.Module, train_projector: bool = False) -> str:
    """A peft target_modules regex: every Linear of the language model (and the projector)."""
    prefixes = [language_model_prefix(model)]
    if train_projector:
        prefixes += [n for n, _ in model.named_modules() if n.split(".")[-1] in PROJECTOR_NAMES]
    leaves: dict[str, set[str]] = {}
    for name, module in model.named_modules():
        for prefix in prefixes:
            if name.startswith(prefix + ".") and isinstance(module, nn.Linear):
                leaves.setdefault(prefix, set()).add(name.split(".")[-1])
    if not leaves:
        raise IllumeError(f"{type(model).__name__} has no linear layers in its language model",
                          "Use a transformer VLM (LoRA needs nn.Linear layers).")
    parts = [rf"{re.escape(p)}(\..*)?\.({'|'.join(sorted(l))})" for p, l in sorted(leaves.items())]
    return "|".join(f"(?:{p})" for p in parts)


def add_lora(model: nn.Module, rank: int = 8, alpha: int = 16, dropout: float = 0.0,
             train_projector: bool = False) -> Any:
    """Freeze the base and wrap it with fresh LoRA adapters (peft)."""
    from peft import LoraConfig, get_peft_model

    for param in model.parameters():
        param.requires_grad_(False)
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, bias="none",
                        target_modules=lora_target_regex(model, train_projector))
    return get_peft_model(model, config)


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def weights_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """A fingerprint of trained weights (to check that all ranks hold the same ones)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
