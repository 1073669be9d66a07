"""The demo VLM: a small LLaVA trained from scratch on Shapes-X, built here on a CPU.

No public weights can be downloaded on these machines, so the main job and the benchmarks
use this model. It is a real LlavaForConditionalGeneration (a small CLIP vision tower, a
small Llama, a byte-level BPE tokenizer trained on the spot), saved with save_pretrained
and loaded by `illume.vlm.VLM.load` like any checkpoint.

It is built in two stages. First the vision tower learns, per patch (one patch per grid
cell), which shape of which colour and size it sees and where (pretrain_vision); the
projector then starts out mapping "this patch shows a square" onto the embedding of the
word " square", and the first attention layer starts out matching words to patches
(ground_words). Then the projector and the language model learn, in exactly the prompt
format of illume/prompts.py and one request per sequence: captions, shape inventories,
question/answer pairs, and rationale prompts followed by *remarks*, true statements about
the picture that are not aimed at the question (shapes.remark), with reference
explanations for only a tiny fraction of the questions. So it answers well and can say
true things about the picture after "seeing that", but rarely the thing that explains the
answer: a latent, imperfect ability to rationalise, which the ILLUME loop carves out.

    python -m illume.demo_model --out DIR            # build (with progress) into DIR
    ensure_demo_model(cache_dir)                     # build once, cached by its settings

Next to the weights, `demo_metrics.json` holds its test figures (answer accuracy, ROUGE-L
and CIDEr of one rationale at T=0.1, fraction of items with an accepted candidate among
10 sampled ones) and `demo_settings.json` the settings it was built from.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from illume import prompts
from illume.atomic_dir import temporary_beside
from illume.datasets import shapes
from illume.errors import IllumeError
from illume.records import Item, atomic_write_text

BUILDER_VERSION = 4  # bump when the recipe changes, so cached models are rebuilt (4: always one thread)
METRICS_FILE = "demo_metrics.json"
SETTINGS_FILE = "demo_settings.json"
CAPTION_PROMPT = "Describe the picture:"
INVENTORY_PROMPTS = {"kind": "List the shapes:", "color": "List the colors:"}
DEFAULT_CACHE = Path(os.environ.get("ILLUME_CACHE", Path.home() / ".cache" / "illume")) / "demo-models"
# measured: 10m15s on one thread of a busy 2-core machine (the language stage is 9 of them); more torch
# threads than free cores slowed the same build several times over
BUILD_ESTIMATE = "about 10 minutes on one free CPU core; each stage says its ETA"
# LoRA training that suits the demo model: the demo (connector.demo) and benchmarks/data_efficiency.py use it
# 15 epochs at lr 1e-3, the epoch kept chosen on held-out items within the gate's accuracy bound: measured
# on 3 demo builds (docs/retention.md, 2026-12-02 "15 epochs at lr 1e-3"); 5 epochs at 3e-4 learnt little
DEMO_TRAINING = {"epochs": 15, "lr": 1e-3, "batch_size": 8}
# How the demo's backend samples (illume-backend options): 10 candidates per temperature instead of the
# product's 5, so the builds that tick few of them still get enough accepted rationales to learn from
# (seed 2: round 2 +2.8 ROUGE-L over the model as built with 5, +11.9 with 10; docs/retention.md).
DEMO_SAMPLING = {"per_temperature": 10, "max_new_tokens": 40}


@dataclass(frozen=True)
class DemoSettings:
    """Everything the built model depends on (its cache key)."""

    seed: int = 0
    scenes: int = 8000  # training scenes; each gives a caption and one question per type
    explanation_fraction: float = 0.002  # of training questions that also get a reference explanation
    remark_fraction: float = 0.05  # of training questions that also get a remark (see the module docstring)
    vision_steps: int = 500  # stage 1: per-patch kind/colour/size/place classification
    steps: int = 2400
    batch_size: int = 48
    lr: float = 7e-4
    vision_lr_scale: float = 0.0  # 0 freezes the vision tower after stage 1
    warmup: int = 50
    text_hidden: int = 160
    text_layers: int = 3
    vision_hidden: int = 96
    vision_layers: int = 2
    vocab_size: int = 600
    test_items: int = 120  # Shapes-X test items the figures in demo_metrics.json are measured on
    evaluate: bool = True

    def key(self) -> str:
        blob = json.dumps({"builder": BUILDER_VERSION, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Stages:
    """Progress of a long build, stage by stage, through `progress` (one line per call).

    Each stage says when it starts and when it ends (always, so a log file shows every stage
    and its duration), and in between how far it is, its rate and the time it has left, at
    most every `every` seconds: 2 on a terminal, 30 otherwise.
    """

    def __init__(self, progress: Progress, every: float | None = None, clock: Callable[[], float] = time.monotonic):
        self.progress, self.clock = progress, clock
        self.every = every if every is not None else (2.0 if sys.stderr.isatty() else 30.0)
        self.started = clock()
        self.name, self.total, self.unit, self.done = "", 0, "", 0
        self.stage_started = self.shown = self.started

    def start(self, name: str, total: int, unit: str, what: str = "") -> None:
        self.name, self.total, self.unit, self.done = name, total, unit, 0
        self.stage_started = self.shown = self.clock()
        self.progress(f"[{name}] {what or f'{total} {unit}'} (build time so far {_duration(self.shown - self.started)})")

    def advance(self, amount: int = 1, note: str = "", prefix: str = "") -> None:
        """`amount` more units done; `prefix` replaces the stage name at the line's start (e.g. "step 50/2400")."""
        self.done += amount
        now = self.clock()
        if now - self.shown < self.every and self.done < self.total:
            return
        self.shown = now
        elapsed = max(now - self.stage_started, 1e-9)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        head = prefix or f"[{self.name}] {self.done}/{self.total} {self.unit}"
        self.progress(f"{head}{'  ' + note if note else ''}  {rate:.3g} {self.unit}/s, {_duration(elapsed)} elapsed, "
                      f"~{_duration(left) if left != float('inf') else '?'} left")

    def end(self, summary: str = "") -> float:
        seconds = self.clock() - self.stage_started
        self.progress(f"[{self.name}] done in {_duration(seconds)}{': ' + summary if summary else ''}")
        return seconds


# ---------------------------------------------------------------- training data
@dataclass
class Example:
    """One training sequence: a scene's picture, a prompt and its target.

    The prompt is exactly what the model sees at inference (illume/prompts.py, image
    placeholder included), and each sequence asks one thing: with several questions in one
    sequence, later answers could be copied from earlier text instead of read from the picture.
    """

    scene: int  # index into the scene pictures
    kind: str  # "caption" | "inventory" | "answer" | "rationale" (a reference explanation) | "remark"
    prompt: str
    target: str  # with prompts.target_text applied


def training_examples(settings: DemoSettings, processor: Any,
                      stages: Stages | None = None) -> tuple[list[Example], list[Any], list[dict]]:
    """Scenes from the Shapes-X train stream: a caption and one question of every type per
    scene, some remarks and a few explanations. Returns (examples, pictures, scenes)."""
    stages = stages or Stages(_quiet)
    stages.start("scenes", settings.scenes, "scenes", f"drawing {settings.scenes} scenes and their training texts")
    rng = shapes.split_rng(settings.seed, "train")
    pick = random.Random(settings.seed + 1)
    image = prompts.image_placeholder(processor)
    examples: list[Example] = []
    images = []
    scenes = []
    for index in range(settings.scenes):
        scene = shapes.make_scene(rng)
        scenes.append(scene)
        images.append(shapes.render(scene))
        examples.append(Example(index, "caption", image + CAPTION_PROMPT, prompts.target_text(shapes.caption(scene, rng))))
        for key, prompt in INVENTORY_PROMPTS.items():
            examples.append(Example(index, "inventory", image + prompt, prompts.target_text(inventory(scene, key, pick))))
        for q in shapes.questions_for(scene, rng):
            examples.append(Example(index, "answer", image + prompts.answer_prompt(q["question"]),
                                    prompts.target_text(q["answer"])))
            draw = pick.random()
            if draw < settings.explanation_fraction:
                kind, text = "rationale", pick.choice(q["explanations"])
            elif draw < settings.explanation_fraction + settings.remark_fraction:
                kind, text = "remark", shapes.remark(scene, pick)["text"]
            else:
                continue
            examples.append(Example(index, kind, prompts.render_rationale_prompt(processor, q["question"], q["answer"]),
                                    prompts.target_text(text)))
        stages.advance()
    stages.end(f"{len(examples)} training sequences")
    return examples, images, scenes


def inventory(scene: dict, key: str, rng: random.Random) -> str:
    """The scene's shapes as "<key value> <other attributes>" entries, e.g. "square green small top right".

    Each entry starts with the attribute a question names a shape by (its kind or its colour),
    so the model learns to look a shape up by that word in one step: predicting the token after
    "square" needs the patch that shows the square. Answering "What color is the square?" then
    only has to copy what the question's "square" looked up.
    """
    entries = []
    for s in scene["shapes"]:
        other = "color" if key == "kind" else "kind"
        entries.append(f"{s[key]} {s[other]} {s['size']} {shapes.where(s)}")
    rng.shuffle(entries)
    return ", ".join(entries) + "."


def tokenizer_corpus(seed: int, scenes: int = 1500) -> list[str]:
    """Every word the model will meet (questions, answers, captions, all explanation wordings)."""
    rng = random.Random(f"corpus:{seed}")
    lines = [CAPTION_PROMPT, *INVENTORY_PROMPTS.values(), "Q: A:", f", {prompts.RATIONALE_CONNECTIVE}"]
    for _ in range(scenes):
        scene = shapes.make_scene(rng)
        lines.append(shapes.caption(scene, rng))
        for q in shapes.questions_for(scene, rng):
            lines.append(prompts.answer_prompt(q["question"]) + prompts.target_text(q["answer"]))
            lines.append(prompts.rationale_prompt(q["question"], q["answer"]))
            lines.extend(q["explanations"])
        lines += [shapes.remark(scene, rng)["text"] for _ in range(3)]
    return lines


# ---------------------------------------------------------------- the model
def build_untrained(settings: DemoSettings, stages: Stages | None = None) -> tuple[Any, Any]:
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    from illume.tiny_models import train_tokenizer

    from tokenizers import processors

    stages = stages or Stages(_quiet)
    stages.start("tokenizer", settings.vocab_size, "tokens", f"training a {settings.vocab_size}-token BPE tokenizer")
    tokenizer = train_tokenizer(tokenizer_corpus(settings.seed), ["<pad>", "<s>", "</s>", "<image>"],
                                vocab_size=settings.vocab_size)
    stages.end()
    # Every input starts with <s>, as in real LLaVA checkpoints. Without it the first image
    # token becomes the attention sink, and training from scratch learns to ignore the image.
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", tokenizer.bos_token_id)])
    patch = shapes.CELL  # one patch per grid cell
    size = shapes.IMAGE_SIZE
    vision = CLIPVisionConfig(hidden_size=settings.vision_hidden, intermediate_size=settings.vision_hidden * 2,
                              num_hidden_layers=settings.vision_layers, num_attention_heads=4,
                              image_size=size, patch_size=patch, projection_dim=settings.vision_hidden)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=settings.text_hidden,
                       intermediate_size=settings.text_hidden * 2 + settings.text_hidden // 2,
                       num_hidden_layers=settings.text_layers, num_attention_heads=4, num_key_value_heads=4,
                       max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       tie_word_embeddings=False)
    config = LlavaConfig(vision_config=vision, text_config=text,
                         image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
                         vision_feature_layer=-1, vision_feature_select_strategy="default",
                         image_seq_length=(size // patch) ** 2)
    model = LlavaForConditionalGeneration(config)
    with torch.no_grad():
        # CLIP starts position embeddings 50x smaller than a patch's pixels embed; then where a
        # patch is (row, column) is learned late and, from some initialisations, not at all
        # within the vision stage. At the patches' scale it is learned every time.
        model.model.vision_tower.embeddings.position_embedding.weight.normal_(0.0, 0.5)
    image_processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=patch,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1)
    return model, processor


def encode_examples(examples: Sequence[Example], processor: Any, image_tokens: int) -> list[tuple[list[int], list[bool]]]:
    """Token ids (image placeholder expanded as the processor does) and which ones are targets."""
    tok = processor.tokenizer
    image_id = tok.convert_tokens_to_ids(prompts.image_placeholder(processor))
    cache: dict[tuple[str, bool], list[int]] = {}

    def ids(text: str, first: bool = False) -> list[int]:
        if (text, first) not in cache:
            found = tok(text, add_special_tokens=first)["input_ids"]  # <s> starts the sequence
            cache[text, first] = [t for p in found for t in ([p] * image_tokens if p == image_id else [p])]
        return cache[text, first]

    encoded = []
    for ex in examples:
        prompt, target = ids(ex.prompt, first=True), ids(ex.target) + [tok.eos_token_id]
        encoded.append((prompt + target, [False] * len(prompt) + [True] * len(target)))
    return encoded


def length_bucketed_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """One epoch of batches of similar lengths (little padding), in random order."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * 16
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start: start + window], key=lambda i: lengths[i])
        batches += [chunk[i: i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


# What the vision stage teaches per patch: the words naming each class (None = no shape there).
PATCH_ATTRIBUTES: dict[str, tuple[str | None, ...]] = {
    "kind": (None, *shapes.KINDS), "color": (None, *sorted(shapes.COLORS)), "size": (None, "small", "large"),
    "row": (None,) * shapes.GRID, "col": (None,) * shapes.GRID}


def patch_labels(scene: dict) -> torch.Tensor:
    """(cells, attributes) class ids per grid cell, row-major like the patches (PATCH_ATTRIBUTES)."""
    cells = torch.arange(shapes.GRID * shapes.GRID)
    labels = torch.zeros(len(cells), len(PATCH_ATTRIBUTES), dtype=torch.long)
    labels[:, 3], labels[:, 4] = cells // shapes.GRID, cells % shapes.GRID
    for s in scene["shapes"]:
        cell = s["row"] * shapes.GRID + s["col"]
        labels[cell, :3] = torch.tensor([PATCH_ATTRIBUTES[key].index(s[key]) for key in ("kind", "color", "size")])
    return labels


def _warmup_cosine(step: int, warmup: int, total: int) -> float:
    """Learning-rate factor: linear warm-up, then cosine decay to a tenth."""
    return min(1.0, (step + 1) / warmup) * (0.5 * (1 + math.cos(math.pi * step / max(1, total))) * 0.9 + 0.1)


def pretrain_vision(model: Any, pixels: torch.Tensor, scenes: Sequence[dict], settings: DemoSettings,
                    stages: Stages | None = None) -> dict:
    """Stage 1: train the vision tower to tell, per patch, the kind, colour, size and place it shows.

    Trained from scratch together with the language model, the tower collapses to a near
    constant output within a few dozen steps and the model learns to ignore the picture.
    This short supervised stage (a stand-in for CLIP's pre-training) gives features that
    name what is where; its read-out heads become the projector's first units (one per
    class), which ground_words() then connects to the language model.
    Returns the share of held-out shapes whose kind, colour, size and place it reads right.
    """
    tower = model.model.vision_tower
    hidden = model.config.vision_config.hidden_size
    heads = torch.nn.ModuleList([torch.nn.Linear(hidden, len(names)) for names in PATCH_ATTRIBUTES.values()])
    labels = torch.stack([patch_labels(scene) for scene in scenes])
    held_out = max(1, len(scenes) // 10)
    optimizer = torch.optim.AdamW([*tower.parameters(), *heads.parameters()], lr=2e-3)
    # warm up, then decay: at a constant rate some initialisations stall on a plateau
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _warmup_cosine(step, 50, settings.vision_steps))
    generator = torch.Generator().manual_seed(settings.seed)

    def loss_and_accuracy(index: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Summed cross-entropy; share of shapes whose attributes are all right."""
        patches = tower(pixels[index], output_hidden_states=True).hidden_states[-1][:, 1:, :]
        target = labels[index]
        loss, right = 0.0, torch.ones_like(target[:, :, 0], dtype=torch.bool)
        for column, head in enumerate(heads):
            logits = head(patches)
            loss = loss + torch.nn.functional.cross_entropy(logits.flatten(0, 1), target[:, :, column].flatten())
            right &= logits.argmax(-1) == target[:, :, column]
        occupied = target[:, :, 0] > 0
        return loss, (right & occupied).sum().item() / max(1, occupied.sum().item())

    stages = stages or Stages(_quiet)
    stages.start("vision", settings.vision_steps, "steps", f"{settings.vision_steps} steps teaching the vision tower "
                 "what each patch shows")
    tower.train()
    train_count = max(1, len(scenes) - held_out)
    for step in range(settings.vision_steps):
        loss, _ = loss_and_accuracy(torch.randint(0, train_count, (64,), generator=generator))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        stages.advance(note=f"loss {loss.item():.3f}")
    with torch.no_grad():
        _, accuracy = loss_and_accuracy(torch.arange(len(scenes) - held_out, len(scenes)))
        first = model.model.multi_modal_projector.linear_1
        rows = sum(len(names) for names in PATCH_ATTRIBUTES.values())
        first.weight[:rows] = torch.cat([head.weight for head in heads])
        first.bias[:rows] = torch.cat([head.bias for head in heads])
    stages.end(f"kind, colour, size and place all right for {100 * accuracy:.1f}% of the shapes in "
               f"{held_out} held-out scenes")
    return {"vision_shape_accuracy": round(100 * accuracy, 2)}


def ground_words(model: Any, tokenizer: Any, scale: float = 10.0, match_gain: float = 4.0) -> list[str]:
    """Start the language model able to look a word up in the picture; returns the words tied.

    Answering "What color is the square?" needs attention from the word "square" to the patch
    that shows a square. Learned from scratch, that content match does not form within this
    build's budget: the model learns which colours are in the picture, never which shape has
    which. So, as initial values only (everything keeps training):
    - the projector maps the vision unit for "square" (from pretrain_vision) onto the input
      embedding of the word " square" (likewise every kind, colour and size word), and
    - the first attention layer starts with equal query and key projections (scaled up), so
      its attention scores start as similarities: a word attends to the patches that show it.
    """
    embeddings = model.model.language_model.embed_tokens.weight
    second = model.model.multi_modal_projector.linear_2
    tied = []
    with torch.no_grad():
        unit = 0
        for names in PATCH_ATTRIBUTES.values():
            for name in names:
                ids = tokenizer(f" {name}", add_special_tokens=False)["input_ids"] if name else []
                if len(ids) == 1:  # a word the tokenizer splits has no single embedding to tie to
                    second.weight[:, unit] = embeddings[ids[0]] * scale
                    tied.append(name)
                unit += 1
        attention = model.model.language_model.layers[0].self_attn
        attention.q_proj.weight.mul_(match_gain)
        attention.k_proj.weight.copy_(attention.q_proj.weight)
    return tied


PIXEL_CHUNK = 500  # pictures per image-processor call (so that the stage can report)


def train(settings: DemoSettings, progress: Progress = _quiet, stages: Stages | None = None) -> tuple[Any, Any, dict]:
    """Build and train the model; returns (model, processor, training summary)."""
    stages = stages or Stages(progress)
    torch.manual_seed(settings.seed)
    model, processor = build_untrained(settings, stages)
    examples, images, scenes = training_examples(settings, processor, stages)
    stages.start("pixels", len(images), "pictures", f"preparing {len(images)} pictures for the vision tower")
    chunks = []
    for start in range(0, len(images), PIXEL_CHUNK):
        chunks.append(processor.image_processor(images[start:start + PIXEL_CHUNK], return_tensors="pt")["pixel_values"])
        stages.advance(len(chunks[-1]))
    pixels = torch.cat(chunks)
    stages.end()
    stages.start("tokens", len(examples), "sequences", f"tokenising {len(examples)} training sequences")
    encoded = encode_examples(examples, processor, int(model.config.image_seq_length))
    kinds = {kind: sum(e.kind == kind for e in examples)
             for kind in ("caption", "inventory", "answer", "rationale", "remark")}
    stages.end(f"{kinds}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")
    vision_summary = pretrain_vision(model, pixels, scenes, settings, stages)
    vision_summary["grounded_words"] = ground_words(model, processor.tokenizer)

    pad = processor.tokenizer.pad_token_id
    # Stage 2: the tower from stage 1 stays frozen by default (vision_lr_scale > 0 fine-tunes it).
    vision = list(model.model.vision_tower.parameters())
    frozen = {id(p) for p in vision}
    groups = [{"params": [p for p in model.parameters() if id(p) not in frozen], "scale": 1.0}]
    if settings.vision_lr_scale > 0:
        groups.append({"params": vision, "scale": settings.vision_lr_scale})
    else:
        for param in vision:
            param.requires_grad_(False)
    optimizer = torch.optim.AdamW(groups, lr=settings.lr, betas=(0.9, 0.98), weight_decay=0.01)
    order_rng = random.Random(settings.seed + 2)
    model.train()
    started = time.time()
    stages.start("language", settings.steps, "steps", f"{settings.steps} steps training the projector and the "
                 "language model")
    losses: list[float] = []
    batches: list[list[int]] = []
    for step in range(settings.steps):
        if not batches:
            batches = length_bucketed_batches([len(ids) for ids, _ in encoded], settings.batch_size, order_rng)
        batch = batches.pop()
        length = max(len(encoded[i][0]) for i in batch)
        input_ids = torch.full((len(batch), length), pad, dtype=torch.long)
        labels = torch.full((len(batch), length), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), length), dtype=torch.long)
        for row, i in enumerate(batch):
            ids, is_target = encoded[i]
            input_ids[row, : len(ids)] = torch.tensor(ids)
            labels[row, : len(ids)] = torch.where(torch.tensor(is_target), torch.tensor(ids), -100)
            mask[row, : len(ids)] = 1
        scene_index = torch.tensor([examples[i].scene for i in batch])
        lr = settings.lr * _warmup_cosine(step, settings.warmup, settings.steps)
        for group in optimizer.param_groups:
            group["lr"] = lr * group["scale"]
        out = model(input_ids=input_ids, attention_mask=mask, pixel_values=pixels[scene_index], labels=labels)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
        optimizer.step()
        losses.append(out.loss.item())
        recent = sum(losses[-50:]) / len(losses[-50:])
        stages.advance(prefix=f"step {step + 1}/{settings.steps}", note=f"loss {recent:.3f}")
    stages.end(f"loss {losses[0]:.3f} -> {sum(losses[-50:]) / max(1, len(losses[-50:])):.3f}")
    model.eval()
    for param in vision:
        param.requires_grad_(True)
    return model, processor, {**vision_summary, "rows": kinds, "first_loss": losses[0], "final_loss": sum(losses[-50:]) / max(1, len(losses[-50:])),
                              "train_seconds": round(time.time() - started, 1)}


# ---------------------------------------------------------------- evaluation
def test_items(settings: DemoSettings) -> list[tuple[Item, Any]]:
    return shapes.generate_split("test", settings.test_items, settings.seed)


def measure(model_dir: str | Path, items: Sequence[tuple[Item, Any]], progress: Progress = _quiet,
            batch_size: int = 40, stages: Stages | None = None) -> dict:
    """Test figures of a saved model (illume.metrics scale, 0-100; accepted_among_10 a fraction).

    accuracy: greedy answers; rouge_l, cider: one rationale per item at T=0.1;
    accepted_among_10: share of items where at least one of the candidates sampled with
    the default SamplingConfig (5 at T=0.3 + 5 at T=0.8) passes the ROUGE-L >= 0.7 critic.
    """
    from illume import metrics
    from illume.critic import RougeCritic
    from illume.vlm import VLM, Query, SamplingConfig

    stages = stages or Stages(progress)
    stages.start("measure", len(items), "items", f"measuring on {len(items)} Shapes-X test items")
    vlm = VLM.load(str(model_dir), device="cpu")
    critic = RougeCritic()
    answers: list[str] = []
    rationales: list[str] = []
    accepted_any: list[bool] = []
    for start in range(0, len(items), batch_size):
        chunk = items[start: start + batch_size]
        queries = [Query(image, item.question, item.answer) for item, image in chunk]
        answers += vlm.answer(queries)
        rationales += vlm.explain(queries, temperature=0.1)
        for (item, _), cands in zip(chunk, vlm.sample(queries, SamplingConfig())):
            accepted_any.append(any(critic.tick([c.text for c in cands], item.explanations)))
        stages.advance(len(chunk))
    stages.end()
    scores = metrics.rationale_scores(rationales, [item.explanations for item, _ in items], meteor=False)
    by_type: dict[str, dict] = {}
    for (item, _), answer, accepted in zip(items, answers, accepted_any):
        row = by_type.setdefault(item.meta.get("qtype", "?"), {"items": 0, "correct": 0, "accepted": 0})
        row["items"] += 1
        row["correct"] += metrics.answer_accuracy([answer], [item.answer]) / 100
        row["accepted"] += accepted
    return {"items": len(items), "accuracy": metrics.answer_accuracy(answers, [item.answer for item, _ in items]),
            "rouge_l": scores["rouge_l"], "cider": scores["cider"], "bleu_4": scores["bleu_4"],
            "accepted_among_10": sum(accepted_any) / len(items),
            "by_question_type": {qtype: {"items": row["items"], "accuracy": round(100 * row["correct"] / row["items"], 1),
                                         "accepted_among_10": round(row["accepted"] / row["items"], 3)}
                                 for qtype, row in sorted(by_type.items())},
            "examples": [{"question": item.question, "answer": item.answer, "predicted": a, "rationale": r,
                          "references": item.explanations}
                         for (item, _), a, r in list(zip(items, answers, rationales))[:6]]}


# ---------------------------------------------------------------- building and caching
def build_demo_model(out: str | Path, settings: DemoSettings = DemoSettings(), progress: Progress = _quiet) -> Path:
    """Train, save (model + processor + settings + metrics) into a temp dir, then rename to out."""
    out = Path(out)
    if (out / SETTINGS_FILE).is_file():
        raise IllumeError(f"{out} already holds a demo model", "Choose another --out directory, or delete it first.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_beside(out)
    threads = torch.get_num_threads()
    # One thread: CPU sums split across threads round differently, so a build on 2 threads and one on 1
    # (or 8) are different models with different demo figures (seed 0: round 1 promoted on one, not on
    # the other). On one thread the same seed gives the same model on every run (docs/retention.md).
    torch.set_num_threads(1)
    try:
        started = time.time()
        stages = Stages(progress)
        progress(f"building the demo model: stages tokenizer, scenes ({settings.scenes}), pixels, tokens, vision "
                 f"({settings.vision_steps} steps), language ({settings.steps} steps)"
                 f"{f', measure ({settings.test_items} items)' if settings.evaluate else ''}; {BUILD_ESTIMATE}")
        model, processor, summary = train(settings, progress, stages)
        model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        atomic_write_text(tmp / SETTINGS_FILE, json.dumps(
            {"builder": BUILDER_VERSION, "key": settings.key(), **dataclasses.asdict(settings), **summary},
            indent=2, sort_keys=True))
        if settings.evaluate:
            figures = measure(tmp, test_items(settings), progress, stages=stages)
            figures["build_seconds"] = round(time.time() - started, 1)
            atomic_write_text(tmp / METRICS_FILE, json.dumps(figures, indent=2, sort_keys=True))
            progress(f"test: accuracy {figures['accuracy']:.1f}  ROUGE-L {figures['rouge_l']:.1f}  "
                     f"CIDEr {figures['cider']:.1f}  accepted among 10: {figures['accepted_among_10']:.2f}")
        try:
            os.rename(tmp, out)
        except OSError:
            if (out / SETTINGS_FILE).is_file():  # another process finished the same build first
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        torch.set_num_threads(threads)
    return out


def ensure_demo_model(cache_dir: str | Path | None = None, seed: int = 0, progress: Progress = _quiet,
                      **overrides: Any) -> Path:
    """The demo model's directory, built on first use and cached by a key of its settings."""
    try:
        settings = dataclasses.replace(DemoSettings(seed=seed), **overrides)
    except TypeError as exc:
        known = ", ".join(f.name for f in dataclasses.fields(DemoSettings))
        raise IllumeError(f"unknown demo model setting: {exc}", f"Use only these settings: {known}.") from None
    out = Path(cache_dir or DEFAULT_CACHE) / f"shapes-demo-{settings.key()}"
    if (out / SETTINGS_FILE).is_file():
        return out
    progress(f"building the demo model into {out} (cached for later runs)")
    return build_demo_model(out, settings, progress)


def read_metrics(model_dir: str | Path) -> dict:
    path = Path(model_dir) / METRICS_FILE
    if not path.is_file():
        raise IllumeError(f"{model_dir} has no {METRICS_FILE}", "Build the model with `python -m illume.demo_model`.")
    return json.loads(path.read_text())


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    defaults = DemoSettings()
    parser = argparse.ArgumentParser(prog="python -m illume.demo_model",
                                     description="Build the Shapes-X demo VLM (a small LLaVA trained from scratch).")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--out", help="directory to write the model into (must not hold one yet)")
    where.add_argument("--cache", help=f"cache directory (default {DEFAULT_CACHE}); reuses a model built before")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--scenes", type=int, default=defaults.scenes)
    parser.add_argument("--explanation-fraction", type=float, default=defaults.explanation_fraction)
    parser.add_argument("--test-items", type=int, default=defaults.test_items)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--no-eval", action="store_true", help="skip measuring the test figures")
    args = parser.parse_args(argv)
    overrides = dict(steps=args.steps, scenes=args.scenes, explanation_fraction=args.explanation_fraction,
                     test_items=args.test_items, evaluate=not args.no_eval, batch_size=args.batch_size)

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        if args.out:
            path = build_demo_model(args.out, dataclasses.replace(DemoSettings(seed=args.seed), **overrides), say)
        else:
            path = ensure_demo_model(args.cache, args.seed, say, **overrides)
    except IllumeError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(path)


if __name__ == "__main__":
    main()
