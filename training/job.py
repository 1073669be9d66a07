"""The training job: export -> batches -> LoRA model -> ILLUME (+ DPO) loss -> DeepSpeed -> adapter.

Runs as one process (`training.run(config)`, `python -m training`) or as one rank of many
under the `deepspeed` launcher; each rank sees its own shard of every epoch.
"""
from __future__ import annotations

import copy
import json
import shutil
import logging
import os
import random
import resource
import signal
import time
from pathlib import Path
from typing import Any

import torch

from illume.atomic_dir import remove_stale_temporaries, swap_in, temporary_beside
from illume.errors import IllumeError
from illume.evaluation import evaluate
from illume.records import atomic_write_text
from illume.layout import ADAPTER_META
from illume.vlm import VLM, pick_device
from training import deepspeed_config
from training.config import TrainConfig, TrainResult
from training.data import BatchBuilder, Export, load_export, load_items, model_inputs, shard_batches, to_device
from training.losses import illume_loss, kto_loss, preference_loss, sequence_logprobs
from training.model import add_lora, load_adapter, load_base, trainable_state, weights_sha256

log = logging.getLogger("training")
RUN_META = "run.json"
FAULT_ENV = "ILLUME_TRAINING_FAULT"  # "kill-after-checkpoint": SIGKILL itself (resume tests)
# What a checkpoint's (epoch, index) and its LR schedule were counted in: a resume must keep them.
RESUME_OPTIONS = ("epochs", "batch_size", "grad_accum", "pair_batch_size", "seed")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def check_inputs(config: TrainConfig) -> tuple[torch.device, Export, list]:
    """Every check that can fail on user input, before any model is loaded."""
    for name in ("epochs", "batch_size", "grad_accum", "eval_batch_size"):
        if getattr(config, name) < 1:
            raise IllumeError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(config, name)}",
                              "Pass a positive number.")
    if config.max_steps is not None and config.max_steps < 1:
        raise IllumeError(f"--max-steps must be at least 1, got {config.max_steps}", "Pass a positive number or leave it out.")
    device = pick_device(config.device)
    if device.type == "cuda" and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    deepspeed_config.read_config(config)  # bad file or stage -> error now
    kto = config.preference_loss == "kto"
    export = load_export(config.export, need_pairs=config.dpo and not kto, need_unticked=config.dpo and kto)
    items = load_items(config.eval_items) if config.eval_items else []
    meta_path = config.out_dir / RUN_META
    recorded = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if recorded:
        previous = recorded.get("base_model")
        if previous and previous != config.base_model and Path(previous).resolve() != Path(config.base_model).resolve():
            raise IllumeError(f"{config.out} holds a run on base model {previous}, not {config.base_model}",
                              "Pass the same --base-model, or choose a new --out directory.")
    if config.init_adapter and not (Path(config.init_adapter) / "adapter_config.json").is_file():
        raise IllumeError(f"--init-adapter {config.init_adapter} is not an adapter directory (no adapter_config.json)",
                          "Pass the `adapter` directory of an earlier run (the one served now), or leave it out.")
    has_checkpoint = (config.checkpoint_dir / "latest").is_file()
    if has_checkpoint and not config.resume:
        raise IllumeError(f"{config.checkpoint_dir} already holds checkpoints of an earlier run",
                          "Pass --resume to continue it, or choose a new --out directory.")
    if has_checkpoint:
        check_resume(config, export, recorded)
    return device, export, items


def run_record(config: TrainConfig, export: Export) -> dict[str, Any]:
    """What run.json keeps of a run for a later --resume to check against."""
    return {"base_model": config.base_model, "export": str(config.export), "export_sha256": export.manifest_sha256,
            **{name: getattr(config, name) for name in RESUME_OPTIONS}}


def check_resume(config: TrainConfig, export: Export, recorded: dict[str, Any]) -> None:
    """Refuse to continue a checkpointed run on other data or other batches: its checkpoint's epoch
    and index would then point into data it never saw."""
    differences = []
    sha = recorded.get("export_sha256")
    if sha is not None and sha != export.manifest_sha256:
        differences.append(f"export {recorded.get('export')} (manifest sha256 {str(sha)[:12]}...), not {config.export} "
                           f"(manifest sha256 {export.manifest_sha256[:12]}...)")
    elif sha is None and recorded.get("export") and \
            Path(recorded["export"]).resolve() != Path(config.export).resolve():  # a record without the sha
        differences.append(f"export {recorded['export']}, not {config.export}")
    differences += [f"--{name.replace('_', '-')} {recorded[name]}, not {getattr(config, name)}"
                    for name in RESUME_OPTIONS if name in recorded and recorded[name] != getattr(config, name)]
    if differences:
        raise IllumeError(f"--resume: the run checkpointed in {config.out} differs: " + "; ".join(differences),
                          "Resume with the same --export and options as that run, or start a new run in a new "
                          "--out directory.")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    """One rank of the job: owns the DeepSpeed engine and the data of this rank."""

    def __init__(self, config: TrainConfig):
        self.config = config
        self.device, self.export, self.items = check_inputs(config)
        self.rank, self.world = deepspeed_config.start_process_group()
        row_batches, pair_batches = self._epoch_batches(0)
        self.micro_per_epoch = len(row_batches) or len(pair_batches)
        total_micro = config.epochs * self.micro_per_epoch
        self.planned_steps = total_micro // config.grad_accum
        if config.max_steps:
            self.planned_steps = min(self.planned_steps, config.max_steps)
        if self.planned_steps < 1:
            raise IllumeError(f"{total_micro} micro-batches per rank cannot fill one step of --grad-accum {config.grad_accum}",
                              "Lower --grad-accum or --batch-size, or raise --epochs.")
        self.ds_config = deepspeed_config.build(config, self.device, self.planned_steps)
        self.zero_stage = int(self.ds_config.get("zero_optimization", {}).get("stage", 0))
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        # ZeRO 3: built partitioned (each rank holds its share from the start); keep hf_ds_config alive.
        base, self.hf_ds_config = load_base(config.base_model, self.ds_config)
        self.eval_processor = base.processor
        self.builder = BatchBuilder(copy.deepcopy(base.processor), decoder_start=base.decoder_start)
        seed_everything(config.seed)  # the same LoRA init whichever way the base was built
        if config.init_adapter:  # warm start: continue the adapter served now (the method's next iteration)
            self.model = load_adapter(base.model, config.init_adapter, config.base_model)
        else:
            self.model = add_lora(base.model, config.lora_rank, config.lora_alpha, config.lora_dropout,
                                  config.train_projector)
        self._start_engine()
        self.peak_rss_loaded_mb = peak_rss_mb()  # model built, engine ready: what loading cost

    # ------------------------------------------------------------------ setup
    def _start_engine(self) -> None:
        import deepspeed

        params = [p for p in self.model.parameters() if p.requires_grad]
        self.engine, _, _, _ = deepspeed.initialize(model=self.model, model_parameters=params, config=self.ds_config)
        self.dtype = next(p for p in self.engine.module.parameters()).dtype
        self.run_device = self.engine.device

    def _epoch_batches(self, epoch: int) -> tuple[list[list[int]], list[list[int]]]:
        """(row batches, pair batches) of this rank for one epoch; either may be empty."""
        c = self.config
        rank, world = self.rank, self.world
        rows = self.export.rows
        pairs = (self.export.unpaired if c.preference_loss == "kto" else self.export.pairs) if c.dpo else []
        row_batches = shard_batches(len(rows), c.batch_size, world, rank, c.seed, epoch) if rows else []
        pair_batches = (shard_batches(len(pairs), c.pair_batch_size or c.batch_size, world, rank, c.seed + 1, epoch)
                        if pairs else [])
        return row_batches, pair_batches

    # ------------------------------------------------------------------ losses
    def micro_loss(self, row_idx: list[int] | None, pair_idx: list[int] | None) -> tuple[torch.Tensor, dict[str, float]]:
        parts: dict[str, float] = {}
        loss = torch.zeros((), device=self.run_device)
        if row_idx:
            batch = to_device(self.builder.rows([self.export.rows[i] for i in row_idx], self.export.rationale_weight,
                                                self.config.answer_in_rationale), self.run_device, self.dtype)
            out = self.engine(**model_inputs(batch))
            sft = illume_loss(out.logits, batch["labels"], batch["loss_weight"])
            loss = loss + sft
            parts["illume_loss"] = sft.item()
        if pair_idx:  # preference pairs, or for kto single rationales (Export.unpaired)
            c = self.config
            single = [self.export.unpaired[i] for i in pair_idx] if c.preference_loss == "kto" else None
            batch = (self.builder.rows([row for row, _ in single], 1.0) if single else
                     self.builder.pairs([self.export.pairs[i] for i in pair_idx]))
            batch = to_device(batch, self.run_device, self.dtype)
            inputs = model_inputs(batch)
            policy, tokens = sequence_logprobs(self.engine(**inputs).logits, batch["labels"])
            with torch.no_grad(), self.engine.module.disable_adapter():
                reference, _ = sequence_logprobs(self.engine.module(**inputs).logits, batch["labels"])
            n = len(pair_idx)
            if c.dpo_length_norm:
                policy, reference = policy / tokens.clamp(min=1), reference / tokens.clamp(min=1)
            if single:
                desirable = torch.tensor([good for _, good in single], device=policy.device)
                dpo, stats = kto_loss(policy, reference, desirable, c.dpo_beta)
            else:
                dpo, stats = preference_loss(policy[:n], policy[n:], reference[:n], reference[n:], c.dpo_beta,
                                             c.preference_loss, c.dpo_label_smoothing)
            loss = loss + c.dpo_weight * dpo
            parts.update(dpo_loss=dpo.item(), **stats)
        return loss, parts

    # ------------------------------------------------------------------ loop
    def train(self) -> TrainResult:
        c = self.config
        engine = self.engine
        state = self._resume() if c.resume else {}
        start_epoch, start_index = state.get("epoch", 0), state.get("index", 0)
        losses: list[float] = []
        metrics: dict[str, Any] = state.get("metrics", {})
        pending: list[float] = []
        train_seconds, samples, micro_seconds = 0.0, 0, []
        self._write_run_meta()
        done = engine.global_steps >= self.planned_steps
        epoch = start_epoch
        for epoch in range(start_epoch, c.epochs):
            if done:
                break
            epoch_parts: list[dict[str, float]] = []  # this rank's loss parts and DPO diagnostics
            row_batches, pair_batches = self._epoch_batches(epoch)
            count = len(row_batches) or len(pair_batches)
            index = -1
            for index in range(start_index if epoch == start_epoch else 0, count):
                micro = epoch * count + index
                torch.manual_seed(c.seed * 7919 + micro)  # dropout etc. identical after a resume
                tick = time.perf_counter()
                rows = row_batches[index] if row_batches else None
                pairs = pair_batches[micro % len(pair_batches)] if pair_batches else None
                loss, parts = self.micro_loss(rows, pairs)
                epoch_parts.append(parts)
                before = engine.global_steps
                engine.backward(loss)
                engine.step()
                micro_seconds.append(time.perf_counter() - tick)
                train_seconds += micro_seconds[-1]
                samples += len(rows or pairs or [])
                pending.append(loss.item())
                if engine.global_steps == before:
                    continue
                losses.append(sum(pending) / len(pending))
                pending = []
                step = engine.global_steps
                if self.rank == 0 and (step % c.log_every == 0 or step == 1):
                    log.info("epoch %d step %d/%d loss %.4f %s", epoch + 1, step, self.planned_steps, losses[-1],
                             " ".join(f"{k} {v:.4f}" for k, v in parts.items()))
                done = step >= self.planned_steps
                last_in_epoch = index + 1 == count
                if c.checkpoint_every and step % c.checkpoint_every == 0 and not done:
                    self._checkpoint(epoch + (1 if last_in_epoch else 0), 0 if last_in_epoch else index + 1, metrics)
                if done:
                    break
            if done or index + 1 == count:
                metrics = self._end_epoch(epoch + 1, _means(epoch_parts))
        self._checkpoint(epoch + 1, 0, metrics, final=True)
        steps = engine.global_steps
        fingerprint = self._save_adapter(c.adapter_dir, metrics, steps)
        chosen = self._keep_chosen_epoch(epoch + 1, steps) if self.rank == 0 else None
        self._barrier()
        if chosen:
            metrics = chosen
        throughput = samples / train_seconds if train_seconds else 0.0
        write_json(c.ranks_dir / f"rank_{self.rank}.json",
                   {"rank": self.rank, "world_size": self.world, "steps": steps, "trainable_sha256": fingerprint,
                    "peak_rss_mb": peak_rss_mb(), "peak_rss_loaded_mb": self.peak_rss_loaded_mb, "samples": samples, "train_seconds": train_seconds,
                    "samples_per_second": throughput, "zero_stage": self.zero_stage, "losses": losses})
        return TrainResult(c.adapter_dir, metrics, steps, losses, throughput, peak_rss_mb(), self.rank,
                           micro_seconds, chosen["epoch"] if chosen else None)

    # ------------------------------------------------------------------ checkpoints
    def _resume(self) -> dict[str, Any]:
        if not (self.config.checkpoint_dir / "latest").is_file():
            log.info("no checkpoint in %s: starting from the beginning", self.config.checkpoint_dir)
            return {}
        path, state = self.engine.load_checkpoint(str(self.config.checkpoint_dir), load_module_strict=False)
        if path is None:
            raise IllumeError(f"could not load the checkpoint in {self.config.checkpoint_dir}",
                              "Delete the checkpoints directory to start over, or restore it from a backup.")
        log.info("resumed from %s at step %d", path, self.engine.global_steps)
        return state or {}

    def _checkpoint(self, epoch: int, index: int, metrics: dict[str, Any], final: bool = False) -> None:
        self.engine.save_checkpoint(str(self.config.checkpoint_dir), tag=f"step_{self.engine.global_steps}",
                                    client_state={"epoch": epoch, "index": index, "metrics": metrics},
                                    exclude_frozen_parameters=True)
        if not final and os.environ.get(FAULT_ENV) == "kill-after-checkpoint":
            os.kill(os.getpid(), signal.SIGKILL)

    def _write_run_meta(self) -> None:
        if self.rank == 0:
            write_json(self.config.out_dir / RUN_META, {**run_record(self.config, self.export),
                                                        "planned_steps": self.planned_steps,
                                                        "world_size": self.world, "zero_stage": self.zero_stage})

    # ------------------------------------------------------------------ outputs
    def _gathered(self):
        """Full trained weights on every rank (ZeRO 3 partitions them)."""
        import contextlib

        if self.zero_stage != 3:
            return contextlib.nullcontext()
        import deepspeed

        return deepspeed.zero.GatheredParameters([p for p in self.engine.module.parameters() if p.requires_grad])

    def _end_epoch(self, epoch: int, train_parts: dict[str, float]) -> dict[str, Any]:
        """The epoch's metrics (held-out, when there are items) and its mean training losses and DPO
        diagnostics, in eval/epoch_<n>.json."""
        if self.items:
            metrics = self._evaluate(epoch, train_parts)
            if self.config.select_epoch:  # each epoch's adapter, to keep the one chosen at the end
                self._save_adapter(self.config.epochs_dir / f"epoch_{epoch}", metrics, self.engine.global_steps)
            return metrics
        metrics = {**train_parts, "epoch": epoch, "step": self.engine.global_steps}
        if self.rank == 0:
            write_json(self.config.eval_dir / f"epoch_{epoch}.json", metrics)
        return metrics

    def _evaluate(self, epoch: int, train_parts: dict[str, float]) -> dict[str, Any]:
        metrics: dict[str, Any] = {}
        # ZeRO 3 gathers weights during forward, so every rank must take part in generation.
        if self.rank == 0 or self.zero_stage == 3:
            vlm = VLM(self.engine.module, self.eval_processor, self.config.base_model, None, self.run_device)
            metrics = evaluate(vlm, self.items, batch_size=self.config.eval_batch_size,
                               max_new_tokens=self.config.eval_max_new_tokens, seed=self.config.seed,
                               meteor=self.rank == 0 and self.config.eval_meteor)
            metrics.update(train_parts)
            metrics["epoch"], metrics["step"] = epoch, self.engine.global_steps
            if self.rank == 0:
                write_json(self.config.eval_dir / f"epoch_{epoch}.json", metrics)
                log.info("epoch %d eval: %s", epoch, {k: round(v, 2) for k, v in metrics.items()
                                                      if isinstance(v, float)})
        self._barrier()
        return metrics

    def _barrier(self) -> None:
        if self.world > 1:
            import deepspeed.comm as dist

            dist.barrier()

    def _keep_chosen_epoch(self, last: int, steps: int) -> dict[str, Any] | None:
        """Rank 0: the chosen epoch's adapter (choose_epoch on the held-out scores) becomes the run's."""
        c = self.config
        if not (self.items and c.select_epoch):
            return None
        files = [c.eval_dir / f"epoch_{n}.json" for n in range(1, last + 1)]
        epochs = [json.loads(f.read_text(encoding="utf-8")) for f in files if f.is_file()]
        chosen = choose_epoch(epochs, c.select_metric, c.min_accuracy)
        source = c.epochs_dir / f"epoch_{chosen['epoch']}" if chosen else None
        if source is None or not (source / ADAPTER_META).is_file():
            log.warning("no epoch could be chosen by %s (held-out metrics: %s): keeping the last", c.select_metric,
                        sorted(epochs[-1]) if epochs else "none")
            return None
        tmp = temporary_beside(c.adapter_dir)
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        meta = json.loads((tmp / ADAPTER_META).read_text(encoding="utf-8"))
        meta.update(chosen_epoch=chosen["epoch"], select_metric=c.select_metric, min_accuracy=c.min_accuracy,
                    steps_total=steps, epoch_scores=[{k: e.get(k) for k in ("epoch", c.select_metric, "accuracy")}
                                                     for e in epochs])
        write_json(tmp / ADAPTER_META, meta)
        swap_in(tmp, c.adapter_dir)
        log.info("kept epoch %d of %d: %s %.4f, accuracy %s", chosen["epoch"], last, c.select_metric,
                 chosen[c.select_metric], chosen.get("accuracy"))
        return chosen

    def _save_adapter(self, target: Path, metrics: dict[str, Any], steps: int) -> str:
        c = self.config
        with self._gathered():
            fingerprint = weights_sha256(trainable_state(self.engine.module))
            if self.rank == 0:
                remove_stale_temporaries(target)  # of a run killed while saving
                tmp = temporary_beside(target)
                self.engine.module.save_pretrained(str(tmp))
                write_json(tmp / ADAPTER_META, {
                    "base_model": c.base_model, "version": c.version or c.out_dir.resolve().name,
                    "data_manifest_sha256": self.export.manifest_sha256, "metrics": _numbers(metrics),
                    "steps": steps, "epochs": c.epochs, "rationale_weight": self.export.rationale_weight,
                    "rows": len(self.export.rows), "pairs": len(self.export.pairs) if c.dpo else 0,
                    "dpo": c.dpo, "dpo_weight": c.dpo_weight, "dpo_beta": c.dpo_beta if c.dpo else None,
                    "preference_loss": c.preference_loss if c.dpo else None,
                    "dpo_length_norm": c.dpo_length_norm if c.dpo else None, "world_size": self.world,
                    "zero_stage": self.zero_stage, "trainable_sha256": fingerprint,
                    "answer_in_rationale": c.answer_in_rationale, "init_adapter": c.init_adapter,
                    "epoch": metrics.get("epoch"), "chosen_epoch": None,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
                swap_in(tmp, target)
        self._barrier()
        return fingerprint


def choose_epoch(epochs: list[dict[str, Any]], metric: str, min_accuracy: float | None) -> dict[str, Any] | None:
    """The epoch to keep: the best `metric` among epochs whose accuracy reaches min_accuracy (the later
    one on ties); when none does, the most accurate. None when no epoch measured the metric."""
    scored = [e for e in epochs if isinstance(e.get(metric), (int, float))]
    fit = [e for e in scored if min_accuracy is None or float(e.get("accuracy", 0.0)) >= min_accuracy]
    if fit:
        return max(fit, key=lambda e: (e[metric], e["epoch"]))
    return max(scored, key=lambda e: (e.get("accuracy", 0.0), e[metric], e["epoch"]), default=None)


def _means(parts: list[dict[str, float]]) -> dict[str, float]:
    keys = {k for p in parts for k in p}
    return {k: sum(p[k] for p in parts if k in p) / sum(k in p for p in parts) for k in sorted(keys)}


def _numbers(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


def run(config: TrainConfig) -> TrainResult:
    """Train one adapter (single process, or this rank under the deepspeed launcher)."""
    try:
        return Trainer(config).train()
    finally:
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()  # a later model load in this process is not ZeRO 3
