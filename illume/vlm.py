"""Load a vision-language model (+ optional LoRA adapter) and sample rationales from it.

`VLM.load` takes a local directory or a Hugging Face id and goes through transformers'
image-text-to-text auto classes, so tiny test models, the demo model and real checkpoints
(SmolVLM, Qwen2-VL, LLaVA, PaliGemma, ...) share one code path.

Sampling follows the method (SPEC section 1): N candidates at each of several
temperatures, top-k over the best fraction of the vocabulary, stop at the end of a
sentence. One batched `generate` call per temperature covers the whole batch of items.

Diversity remedy (`SamplingConfig.base_share`): trained round after round on its own accepted
outputs, the model's candidates collapse (issue 15: distinct candidates per item fell to 0.62x
round 1 by round 3 in benchmarks/data_efficiency.py). With an adapter loaded unmerged
(`VLM.load(..., keep_base=True)`), that share of the candidates, hottest temperature first, is
sampled with the adapter disabled, i.e. by the model as built (0.97x round 1 at share 0.5,
ml_backend/README.md).
"""
from __future__ import annotations

import json
import logging
import math
import threading
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image

from illume import processor_batch, prompts
from illume.errors import IllumeError
from illume.keyed_sampling import KeyedGumbelSampler, content_key, row_seed
from illume.layout import ADAPTER_META
from illume.records import Candidate
from illume.sampling import DEFAULT_BASE_SHARE, SamplingConfig  # noqa: F401 (declared there, light to import)
from illume.text import normalise

log = logging.getLogger(__name__)


@dataclass
class Query:
    """What the model looks at: an image, a question and (for rationales) an answer. `key` names
    the query for sampling (a task, an item): its candidates depend on the key and the seed only,
    not on the batch it is sampled in; "" keys it by its content."""

    image: Image.Image
    question: str
    answer: str = ""
    key: str = ""

    def sampling_key(self) -> str:
        return self.key or content_key(self.image, self.question, self.answer)


def pick_device(device: str | None = None) -> torch.device:
    if device:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise IllumeError(f"device {device!r} was asked for, but CUDA is not available here",
                              "Use --device cpu, or run on a machine with a GPU.")
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(device: torch.device, dtype: str | None = None) -> torch.dtype:
    if dtype:
        try:
            return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                    "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[dtype]
        except KeyError:
            raise IllumeError(f"unknown dtype {dtype!r}", "Use one of float32, bfloat16, float16.") from None
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def _check_model_dir(model: str) -> None:
    path = Path(model)
    looks_local = path.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1
    if not looks_local:
        return  # a hub id: transformers resolves it (from its cache when offline)
    if not path.is_dir():
        raise IllumeError(f"model directory {model} does not exist",
                          "Pass a directory written by save_pretrained, or a Hugging Face model id.")
    if not (path / "config.json").is_file():
        raise IllumeError(f"{model} has no config.json, so it is not a saved model",
                          "Pass the directory that save_pretrained wrote (it holds config.json and the weights).")


class VLM:
    """A loaded model + processor, ready to answer and to sample rationales."""

    def __init__(self, model: Any, processor: Any, name: str, adapter: str | None, device: torch.device):
        self.model = model
        self.processor = processor
        self.name = name
        self.adapter = adapter
        self.device = device
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self._toggle = threading.Lock()  # disable_adapter flips the whole model: one generation at a time
        self.tokenizer.padding_side = "left"  # generation continues the prompt's last token
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, model: str, adapter: str | None = None, device: str | None = None,
             dtype: str | None = None, keep_base: bool = False) -> "VLM":
        """Load base model + processor (and a peft LoRA adapter directory, if given).

        The adapter is merged into the weights unless keep_base: then it stays a peft layer that
        sample() can switch off for SamplingConfig.base_share of the candidates (slower per
        token; ml_backend/README.md has the measured cost)."""
        from transformers import AutoModelForImageTextToText, AutoProcessor

        model = str(model)
        _check_model_dir(model)
        torch_device = pick_device(device)
        try:
            processor = AutoProcessor.from_pretrained(model)
            net = AutoModelForImageTextToText.from_pretrained(model, dtype=pick_dtype(torch_device, dtype))
        except IllumeError:
            raise
        except Exception as exc:  # transformers raises many types for a broken checkpoint
            raise IllumeError(f"could not load the model from {model}: {type(exc).__name__}: {exc}",
                              "Check that the directory is a complete save_pretrained checkpoint "
                              "(config, weights, processor files) of an image-text-to-text model.") from exc
        if adapter:
            net = apply_adapter(net, adapter, model, merge=not keep_base)
        net.to(torch_device).eval()
        return cls(net, processor, name=model, adapter=adapter, device=torch_device)

    # ------------------------------------------------------------------ inputs
    def encode(self, images: Sequence[Image.Image], texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenise texts (with image placeholders) and process images, as one padded batch."""
        # Left: generation continues each prompt's last token. An encoder reads its prompt whole, from
        # position 0 (BART's learnt positions ignore the attention mask): right.
        side = "left" if self.decoder_start is None else "right"
        batch = processor_batch.process(self.processor, [img.convert("RGB") for img in images], texts,
                                        padding_side=side)
        dtype = next(self.model.parameters()).dtype
        return {k: (v.to(self.device, dtype) if v.is_floating_point() else v.to(self.device))
                for k, v in batch.items()}

    def rationale_texts(self, queries: Sequence[Query]) -> list[str]:
        return [prompts.render_rationale_prompt(self.processor, q.question, q.answer) for q in queries]

    def answer_texts(self, queries: Sequence[Query]) -> list[str]:
        return [prompts.render_answer_prompt(self.processor, q.question) for q in queries]

    # ------------------------------------------------------------------ generation
    def _top_k(self, fraction: float) -> int:
        vocab = self.model.get_output_embeddings().weight.shape[0]
        return max(1, int(math.ceil(vocab * fraction)))

    def _stop_ids(self) -> list[int]:
        ids = {self.tokenizer.eos_token_id}
        gen_eos = getattr(self.model.generation_config, "eos_token_id", None)
        ids.update(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        return [i for i in ids if i is not None]

    @torch.inference_mode()
    def _generate(self, inputs: dict[str, torch.Tensor], *, do_sample: bool = False, temperature: float = 1.0,
                  top_k: int | None = None, num_return_sequences: int = 1, max_new_tokens: int = 100,
                  sampler: KeyedGumbelSampler | None = None) -> tuple[list[str], list[float]]:
        """One generate call; returns decoded continuations and their mean token log-prob. With a
        `sampler` the draws are its own (per row): it leaves one token to sample at each step."""
        kwargs: dict[str, Any] = dict(max_new_tokens=max_new_tokens, do_sample=do_sample,
                                      num_return_sequences=num_return_sequences,
                                      return_dict_in_generate=True, output_logits=True,
                                      pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self._stop_ids(),
                                      stop_strings=[".", "!", "?"], tokenizer=self.tokenizer)
        if sampler is not None:  # it applies its own temperature and top-k
            from transformers import LogitsProcessorList

            kwargs.update(do_sample=True, temperature=1.0, top_k=None, top_p=1.0,
                          logits_processor=LogitsProcessorList([sampler]))
        elif do_sample:
            kwargs.update(temperature=temperature, top_k=top_k, top_p=1.0)
        else:
            kwargs.update(temperature=None, top_k=None, top_p=None)
        out = self.model.generate(**inputs, **kwargs)
        # The generated tokens are the last ones, one per step: after the prompt for a decoder-only
        # model, after the decoder's start token for an encoder-decoder one.
        new_tokens = out.sequences[:, out.sequences.shape[1] - len(out.logits):]
        # Mean log-probability under the model itself (raw logits, before temperature/top-k).
        logits = torch.stack(out.logits, dim=1).float()
        token_logp = torch.log_softmax(logits, dim=-1).gather(-1, new_tokens.unsqueeze(-1)).squeeze(-1)
        mask = self._generated_mask(new_tokens)
        scores = ((token_logp * mask).sum(1) / mask.sum(1).clamp(min=1)).tolist()
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return [prompts.first_sentence(t) for t in texts], scores

    def _generated_mask(self, new_tokens: torch.Tensor) -> torch.Tensor:
        """1 for generated tokens up to and including the first stop token, 0 for padding after it."""
        stop = torch.zeros_like(new_tokens, dtype=torch.bool)
        for token_id in self._stop_ids():
            stop |= new_tokens == token_id
        after_stop = (stop.cumsum(1) - stop.long()) > 0
        return (~after_stop).float()

    @property
    def decoder_start(self) -> int | None:
        """The token an encoder-decoder model's decoder starts from (training.data.BatchBuilder); None for
        decoder-only models."""
        config = self.model.config
        if not getattr(config, "is_encoder_decoder", False):
            return None
        for source in (self.model.generation_config, config, getattr(config, "text_config", None)):
            start = getattr(source, "decoder_start_token_id", None)
            if start is not None:
                return int(start)
        raise IllumeError(f"{self.name} is an encoder-decoder model whose config names no decoder_start_token_id",
                          "Set decoder_start_token_id in its config.json or generation_config.json.")

    @property
    def base_available(self) -> bool:
        """An adapter is loaded unmerged, so the model as built can be sampled too."""
        return bool(self.adapter) and hasattr(self.model, "disable_adapter")

    def sample(self, queries: Sequence[Query], config: SamplingConfig = SamplingConfig(),
               dedupe: bool = True) -> list[list[Candidate]]:
        """Candidate rationales per query: config.count of them before deduplication, in
        temperature order; within a temperature, the adapter's first, then the base model's."""
        if not queries:
            return []
        base_counts = config.base_counts() if self.adapter else [0] * len(config.temperatures)
        if any(base_counts) and not self.base_available:
            raise IllumeError(f"base share {config.base_share} asks for candidates with the adapter disabled, but "
                              f"adapter {self.adapter} was merged into the weights",
                              "Load the model with VLM.load(..., keep_base=True), or sample with base_share 0.")
        inputs = self.encode([q.image for q in queries], self.rationale_texts(queries))
        keys = [q.sampling_key() for q in queries]
        per_item: list[list[Candidate]] = [[] for _ in queries]
        top_k = self._top_k(config.top_k_fraction)
        with self._toggle:
            for index, (temperature, from_base) in enumerate(zip(config.temperatures, base_counts)):
                # The base part draws from the same seed as the model as built would: its
                # candidates are the ones that model samples at this temperature.
                parts = ((config.per_temperature - from_base, nullcontext),
                         (from_base, getattr(self.model, "disable_adapter", nullcontext)))
                for (count, context), first in zip(parts, (from_base, 0)):
                    if not count:
                        continue
                    # Candidate j of a query draws from its own seed: the base part's j < from_base are
                    # those the model as built draws, the adapter's take j >= from_base.
                    seeds = [row_seed(config.seed, key, index, first + j) for key in keys for j in range(count)]
                    with context():
                        texts, scores = self._generate(inputs, sampler=KeyedGumbelSampler(seeds, temperature, top_k),
                                                       num_return_sequences=count, max_new_tokens=config.max_new_tokens)
                    for row, (text, score) in enumerate(zip(texts, scores)):  # grouped per query
                        per_item[row // count].append(Candidate(text.strip(), float(score), temperature))
        return [dedupe_candidates(c) for c in per_item] if dedupe else per_item

    def explain(self, queries: Sequence[Query], temperature: float = 0.1, max_new_tokens: int = 100,
                seed: int = 0) -> list[str]:
        """One rationale per query at a low temperature (validation / test, SPEC section 1)."""
        if not queries:
            return []
        inputs = self.encode([q.image for q in queries], self.rationale_texts(queries))
        with self._toggle:  # never while sample() has the adapter switched off
            torch.manual_seed(seed)
            texts, _ = self._generate(inputs, do_sample=True, temperature=temperature,
                                      top_k=self._top_k(SamplingConfig.top_k_fraction), max_new_tokens=max_new_tokens)
        return [t.strip() for t in texts]

    def answer(self, queries: Sequence[Query], max_new_tokens: int = 10) -> list[str]:
        """Greedy answers to "Q: {question} A:"."""
        if not queries:
            return []
        inputs = self.encode([q.image for q in queries], self.answer_texts(queries))
        with self._toggle:
            texts, _ = self._generate(inputs, do_sample=False, max_new_tokens=max_new_tokens)
        return [t.strip().rstrip(".").strip() for t in texts]

    @property
    def version(self) -> str:
        """A human-readable version: the adapter's version name, else the model's name."""
        if self.adapter:
            version = adapter_json(Path(self.adapter), ADAPTER_META).get("version")
            if version is not None and not (isinstance(version, str) and len(version) <= MAX_VERSION_CHARS
                                            and version.isprintable()):
                raise IllumeError(f"adapter {self.adapter}: its {ADAPTER_META} names the version {str(version)[:80]!r}, "
                                  f"not a printable text of at most {MAX_VERSION_CHARS} characters",
                                  "Write the adapter again with the training job (--model-version NAME).")
            return version or Path(self.adapter).name
        return Path(self.name).name or self.name


MIN_RATIONALE_CHARS = 3


def dedupe_candidates(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Drop fragments under 3 characters and keep the best-scored copy of each text."""
    best: dict[str, Candidate] = {}
    for cand in candidates:
        key = normalise(cand.text)
        if len(key) < MIN_RATIONALE_CHARS:
            continue
        if key not in best or cand.score > best[key].score:
            best[key] = cand
    return sorted(best.values(), key=lambda c: -c.score)


MAX_VERSION_CHARS = 200  # a version travels in every prediction, /health and /versions
MAX_ADAPTER_JSON_BYTES = 1 << 20  # adapter_config.json and illume_adapter.json are a few hundred bytes


def adapter_json(folder: Path, name: str) -> dict[str, Any]:
    """A JSON object file of an adapter directory ({} when absent), bounded and named in errors."""
    path = folder / name
    if not path.exists():
        return {}
    todo = "Write the adapter again with the training job."
    if not path.is_file() or path.stat().st_size > MAX_ADAPTER_JSON_BYTES:
        raise IllumeError(f"adapter {folder}: {name} is not a regular file of at most {MAX_ADAPTER_JSON_BYTES} bytes",
                          todo)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as exc:
        raise IllumeError(f"adapter {folder}: {name} is not valid JSON ({type(exc).__name__})", todo) from exc
    if not isinstance(data, dict):
        raise IllumeError(f"adapter {folder}: {name} holds a {type(data).__name__}, not a JSON object", todo)
    return data


def _same_base(trained_on: Any, base: str) -> bool:
    return not trained_on or trained_on == base or Path(str(trained_on)).name == Path(base).name


def _check_weights(path: Path, adapter: str) -> None:
    """The adapter's weights file holds tensors: peft would otherwise keep its fresh LoRA weights,
    whose B matrices are zero, and serve the base model under the adapter's version."""
    weights = path / "adapter_model.safetensors"
    if not weights.is_file():
        if not (path / "adapter_model.bin").is_file():
            raise IllumeError(f"adapter directory {adapter} has no adapter_model.safetensors",
                              "Pass the `adapter` directory written by the training job, whole.")
        return
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as handle:
            empty = not list(handle.keys())
    except Exception as exc:  # safetensors raises its own error types for a bad header
        raise IllumeError(f"adapter {adapter}: adapter_model.safetensors cannot be read ({type(exc).__name__}: "
                          f"{str(exc)[:200]})", "Write the adapter again with the training job.") from exc
    if empty:
        raise IllumeError(f"adapter {adapter}: adapter_model.safetensors holds no weights",
                          "Write the adapter again with the training job.")


def apply_adapter(net: Any, adapter: str, base: str, merge: bool = True) -> Any:
    """Wrap a base model with a saved peft LoRA adapter, refusing one made for another base;
    merged into the weights (no peft layers left) unless merge is False."""
    from peft import PeftModel

    path = Path(adapter)
    if not (path / "adapter_config.json").is_file():
        raise IllumeError(f"adapter directory {adapter} has no adapter_config.json",
                          "Pass the `adapter` directory written by the training job.")
    meta = adapter_json(path, ADAPTER_META)
    # ours record the base they were trained on; any peft adapter names one in its config
    trained_on = meta.get("base_model") if meta else adapter_json(path, "adapter_config.json").get(
        "base_model_name_or_path")
    if not _same_base(trained_on, base):
        raise IllumeError(f"adapter {adapter} was trained on {str(trained_on)[:200]}, not on {base}",
                          "Load it with the base model it was trained on.")
    _check_weights(path, adapter)
    try:
        wrapped = PeftModel.from_pretrained(net, str(path))
        return wrapped.merge_and_unload() if merge else wrapped
    except Exception as exc:
        raise IllumeError(f"could not apply adapter {adapter} to {base}: {type(exc).__name__}: {str(exc)[:1000]}",
                          "Check that the adapter was trained on this base model.") from exc
