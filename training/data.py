"""Export directory -> validated records -> padded batches built by the model's own processor.

Each example is the exact prompt of illume.prompts followed by target_text(target) and the
end-of-sequence token. Labels are -100 on the prompt (image tokens included), on padding and on
whatever the processor adds around every text, so only the target's tokens and the end token
are learned, whichever side the processor pads on (`target_span`). An encoder-decoder model reads
the prompt in its encoder and learns the target in its decoder. Nothing is ever truncated.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import torch

from illume import processor_batch, prompts
from illume.errors import IllumeError
from illume.images import load_local_image
from illume.records import (ANSWER_ONLY, RATIONALE, Item, PreferencePair, TrainingRow, read_json_object, read_jsonl,
                            rationale_weight, sha256_file)
from illume.layout import EXPORT_MANIFEST, EXPORT_PAIRS, EXPORT_ROWS, EXPORT_UNTICKED

IGNORE = -100
_EXPORT_HINT = "Write the export with `illume-sync export --out DIR` and pass that DIR as --export."


@dataclass
class Export:
    """What one export directory holds, images resolved to absolute paths."""

    directory: Path
    rows: list[TrainingRow]
    pairs: list[PreferencePair]
    rationale_weight: float
    manifest_sha256: str
    manifest: dict[str, Any] = field(default_factory=dict)
    unticked: list[TrainingRow] = field(default_factory=list)

    @property
    def unpaired(self) -> list[tuple[TrainingRow, bool]]:
        """Single rationales for an unpaired loss (KTO): accepted rows desirable, unticked ones not."""
        return [(r, True) for r in self.rows if r.kind == RATIONALE] + [(r, False) for r in self.unticked]


def _resolve(base: Path, image: str, where: str) -> str:
    if image.startswith(("http://", "https://", "data:", "/data/")):
        raise IllumeError(f"{where}: image {image!r} is not a file inside the export",
                          "Export again: the connector copies images under <export>/images/.")
    path = Path(image) if Path(image).is_absolute() else base / image
    if not path.is_file():
        raise IllumeError(f"{where}: image {image!r} not found (looked at {path})",
                          "Image paths are relative to the export directory; export again or copy the images.")
    return str(path)


def load_export(directory: str | Path, need_pairs: bool = False, need_unticked: bool = False) -> Export:
    """Read and check an export directory; every problem is an IllumeError before training."""
    base = Path(directory)
    if not base.is_dir():
        raise IllumeError(f"export directory {base} does not exist", _EXPORT_HINT)
    rows_path, pairs_path, manifest_path = base / EXPORT_ROWS, base / EXPORT_PAIRS, base / EXPORT_MANIFEST
    manifest: dict[str, Any] = {}
    if manifest_path.is_file():
        manifest = read_json_object(manifest_path, _EXPORT_HINT)
    rows = read_jsonl(rows_path, TrainingRow) if rows_path.is_file() else []
    pairs = read_jsonl(pairs_path, PreferencePair) if pairs_path.is_file() else []
    unticked = read_jsonl(base / EXPORT_UNTICKED, TrainingRow) if (base / EXPORT_UNTICKED).is_file() else []
    if need_unticked and not unticked:
        raise IllumeError(f"--preference-loss kto needs unticked candidates, but {base / EXPORT_UNTICKED} is missing "
                          "or empty", "Write the candidates nobody ticked there (rows.jsonl's layout), or use dpo.")
    if need_pairs and not pairs:
        raise IllumeError(f"--dpo needs preference pairs, but {pairs_path} is missing or empty",
                          "Export with rejected candidates (preferences.jsonl), or train without --dpo.")
    if not rows and not need_pairs:
        raise IllumeError(f"{base} has no training rows ({EXPORT_ROWS} is missing or empty)", _EXPORT_HINT)
    _check_hashes(base, manifest)
    rows = [replace(r, image=_resolve(base, r.image, f"{rows_path}, item {r.item_id}")) for r in rows]
    unticked = [replace(r, image=_resolve(base, r.image, f"{EXPORT_UNTICKED}, item {r.item_id}")) for r in unticked]
    pairs = [replace(p, images=[_resolve(base, i, f"{pairs_path}, item {p.item_id}") for i in p.images])
             for p in pairs]
    for pair in pairs:
        if len(pair.images) != 1:
            raise IllumeError(f"{pairs_path}, item {pair.item_id}: {len(pair.images)} images, expected 1",
                              "Each preference pair refers to exactly one image.")
    weight = manifest.get("rationale_weight")
    weight = float(weight) if isinstance(weight, (int, float)) and weight > 0 else rationale_weight(rows)
    digest = sha256_file(manifest_path if manifest_path.is_file() else rows_path if rows_path.is_file() else pairs_path)
    return Export(base, rows, pairs, weight, digest, manifest, unticked)


def _check_hashes(base: Path, manifest: dict[str, Any]) -> None:
    """Refuse files that changed after the manifest was written (half-copied exports)."""
    hashes = manifest.get("sha256") or manifest.get("files") or {}
    if not isinstance(hashes, dict):
        return
    for name, expected in hashes.items():
        expected = expected.get("sha256") if isinstance(expected, dict) else expected
        path = base / name
        if isinstance(expected, str) and path.is_file() and sha256_file(path) != expected:
            raise IllumeError(f"{path} does not match the sha256 in {base / EXPORT_MANIFEST}",
                              "The export is incomplete or was edited; export again.")


def load_items(path: str | Path) -> list[Item]:
    """Held-out items (illume.records.Item per line), images relative to the file."""
    path = Path(path)
    if not path.is_file():
        raise IllumeError(f"evaluation items file {path} does not exist",
                          "Pass a JSONL file of items (one illume.records.Item per line) as --eval-items.")
    items = read_jsonl(path, Item)
    if not items:
        raise IllumeError(f"{path} holds no items", "Pass a non-empty JSONL file of items as --eval-items.")
    return [replace(i, image=_resolve(path.parent, i.image, f"{path}, item {i.item_id}")) for i in items]


def shard_batches(count: int, batch_size: int, world: int, rank: int, seed: int, epoch: int) -> list[list[int]]:
    """This rank's micro-batches (indices) of one epoch; every rank gets the same number.

    The order is a seeded shuffle per epoch; the tail wraps around to the start so that
    all ranks step together.
    """
    order = list(range(count))
    random.Random(seed * 100_003 + epoch).shuffle(order)
    per_step = batch_size * world
    steps = max(1, math.ceil(count / per_step))
    padded = (order * (steps * per_step // max(count, 1) + 1))[: steps * per_step]
    mine = padded[rank::world]
    return [mine[i * batch_size:(i + 1) * batch_size] for i in range(steps)]


def target_span(full: Sequence[int], prompt: Sequence[int]) -> tuple[int, int]:
    """[start, end) of the target in a row's tokens (padding removed), given the prompt's tokens alone.

    The target starts where prompt+target stops matching the prompt (normally the prompt's length;
    earlier when a tokenizer merges across the seam) and ends before the tokens the processor adds
    after every text (Chameleon's separator): those the two rows end with alike, as far as the
    prompt's own tokens leave room.
    """
    start = 0
    while start < min(len(full), len(prompt)) and full[start] == prompt[start]:
        start += 1
    tail = 0
    while tail < len(prompt) - start and tail < len(full) - start and full[-1 - tail] == prompt[-1 - tail]:
        tail += 1
    return start, len(full) - tail


def _token_aligned(batch: dict[str, Any], key: str) -> bool:
    """Whether batch[key] has a value per token of input_ids (attention mask, token types, Mllama's
    cross-attention mask), so that it belongs to the prompt and target together."""
    value = batch[key]
    return torch.is_tensor(value) and value.dim() >= 2 and value.shape[:2] == batch["input_ids"].shape[:2]


class BatchBuilder:
    """Turns rows / preference pairs into model inputs with the model's own processor.

    decoder_start (an encoder-decoder model's decoder start token, illume.vlm.VLM.decoder_start; None
    for decoder-only models): the prompt goes to the encoder, the target to the decoder
    (decoder_input_ids), labelled so that training.losses reads them like a decoder-only model's:
    position i's logits predict label i + 1.
    """

    def __init__(self, processor: Any, decoder_start: int | None = None):
        self.processor = processor
        self.decoder_start = decoder_start
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.tokenizer.padding_side = "right"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.eos = self.tokenizer.eos_token or ""

    def prompt(self, question: str, answer: str, kind: str) -> str:
        if kind == RATIONALE:
            return prompts.render_rationale_prompt(self.processor, question, answer)
        return prompts.render_answer_prompt(self.processor, question)

    def encode(self, images: Sequence[str], prompt_texts: Sequence[str], targets: Sequence[str]) -> dict[str, torch.Tensor]:
        """Padded inputs + labels for prompt_i + target_i; labels only on target tokens and eos."""
        pil = [load_local_image(p) for p in images]
        if self.decoder_start is not None:
            return self._encode_for_decoder(pil, prompt_texts, targets)
        # Right padding asked for explicitly: some processors pad left whatever the tokenizer says.
        if processor_batch.takes_suffix(self.processor):  # it appends the target (and eos) after its own prompt end
            batch = processor_batch.process(self.processor, pil, prompt_texts, [prompts.target_text(t) for t in targets],
                                            padding_side="right")
        else:
            full = [p + prompts.target_text(t) + self.eos for p, t in zip(prompt_texts, targets)]
            batch = processor_batch.process(self.processor, pil, full, padding_side="right")
        prompt = processor_batch.process(self.processor, pil, list(prompt_texts), padding_side="right")
        labels = torch.full_like(batch["input_ids"], IGNORE)
        aligned = [key for key in batch if _token_aligned(batch, key)]
        for row in range(labels.shape[0]):
            # Positions of real tokens, wherever the processor put its padding (BLIP-2 pads mid-row).
            where = batch["attention_mask"][row].nonzero().squeeze(-1)
            full_ids = batch["input_ids"][row, where]
            prompt_ids = prompt["input_ids"][row, prompt["attention_mask"][row].bool()]
            start, end = target_span(full_ids.tolist(), prompt_ids.tolist())
            # What the processor adds after every text (Chameleon's separator) goes before the target, so
            # the model learns to continue the prompt exactly as the processor gives it when sampling.
            order = torch.cat([where[:start], where[end:], where[start:end]])
            for key in aligned:
                batch[key][row, where] = batch[key][row, order]
            labels[row, where[len(where) - (end - start):]] = full_ids[start:end]
            self._check_learnt(labels[row], targets[row])
        for key, value in prompt.items():  # inputs not read token by token come from the prompt, as at inference:
            if not (_token_aligned(batch, key) and _token_aligned(prompt, key)):  # InstructBLIP's Q-Former text
                batch[key] = value
        batch["labels"] = labels
        return batch

    def _encode_for_decoder(self, pil: list, prompt_texts: Sequence[str], targets: Sequence[str]) -> dict[str, torch.Tensor]:
        """Encoder inputs from the prompts; decoder inputs = start token + target + eos, right-padded."""
        batch = processor_batch.process(self.processor, pil, list(prompt_texts), padding_side="right")
        rows = [[self.decoder_start] + self.tokenizer(prompts.target_text(t), add_special_tokens=False)["input_ids"]
                + [self.tokenizer.eos_token_id] for t in targets]
        width = max(map(len, rows))
        decoder_ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        decoder_mask = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        for index, ids in enumerate(rows):
            decoder_ids[index, :len(ids)] = torch.tensor(ids)
            decoder_mask[index, :len(ids)] = 1
            labels[index, 1:len(ids)] = torch.tensor(ids[1:])  # the start token is given, never learnt
            self._check_learnt(labels[index], targets[index])
        batch.update(decoder_input_ids=decoder_ids, decoder_attention_mask=decoder_mask, labels=labels)
        return batch

    def _check_learnt(self, labels: torch.Tensor, target: str) -> None:
        learnt = labels[labels != IGNORE]
        if not len(learnt):
            raise IllumeError(f"the target {target!r} produced no tokens to learn",
                              "Check that rows have a non-empty answer/rationale.")
        eos_id = self.tokenizer.eos_token_id
        if eos_id is not None and int(learnt[-1]) != eos_id:
            raise IllumeError(f"the tokens learnt for the target {target!r} do not end with the end token "
                              f"({self.tokenizer.decode(learnt)!r})",
                              "Report the model: its processor adds tokens after the text that the labels cannot "
                              "tell from the target.")

    def prompt_and_target(self, row: TrainingRow, answer_in_rationale: bool = False) -> tuple[str, str]:
        """A row's prompt and target. With answer_in_rationale, a rationale row's answer moves from the
        prompt into the target ("{question}" + " {answer}, seeing that {rationale}"), so the loss covers
        the answer as well as the rationale, as the method trains it (SPEC section 1); the text is the
        same as the rationale prompt followed by its rationale."""
        if row.kind != RATIONALE:
            return self.prompt(row.question, row.answer, row.kind), row.answer
        prompt = self.prompt(row.question, row.answer, RATIONALE)
        if not answer_in_rationale:
            return prompt, row.rationale or ""
        reply = prompts.rationale_reply(row.answer, row.rationale or "")
        cut = prompt.rfind(f"{row.answer}, {prompts.RATIONALE_CONNECTIVE}")
        return prompt[:cut].rstrip(" "), reply  # target_text puts the one space back

    def rows(self, rows: Sequence[TrainingRow], weight: float, answer_in_rationale: bool = False) -> dict[str, torch.Tensor]:
        """ILLUME batch: inputs, labels, and a loss weight per row (w for rationale rows)."""
        prompt_texts, targets = zip(*(self.prompt_and_target(r, answer_in_rationale) for r in rows))
        batch = self.encode([r.image for r in rows], list(prompt_texts), list(targets))
        batch["loss_weight"] = torch.tensor([weight if r.kind == RATIONALE else 1.0 for r in rows])
        return batch

    def pairs(self, pairs: Sequence[PreferencePair]) -> dict[str, torch.Tensor]:
        """DPO batch: chosen rationales first, then rejected ones, same prompts and images."""
        prompt_texts = [self.prompt(p.question, p.answer, RATIONALE) for p in pairs]
        images = [p.images[0] for p in pairs]
        return self.encode(images * 2, prompt_texts * 2, [p.chosen for p in pairs] + [p.rejected for p in pairs])


def to_device(batch: dict[str, torch.Tensor], device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {k: (v.to(device, dtype) if v.is_floating_point() and k != "loss_weight" else v.to(device))
            for k, v in batch.items()}


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in batch.items() if k not in ("labels", "loss_weight")}


__all__ = ["ANSWER_ONLY", "RATIONALE", "BatchBuilder", "Export", "IGNORE", "load_export", "load_items",
           "model_inputs", "shard_batches", "to_device"]
