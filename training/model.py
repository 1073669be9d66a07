"""The trained model: the base VLM, frozen, with LoRA adapters on its language model."""
from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import math
import os
import re
import struct
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from torch import nn

from illume.errors import IllumeError

log = logging.getLogger("training")

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


def lora_target_regex(model: nn.Module, train_projector: bool = False, train_heads: bool = False) -> str:
    """A peft target_modules regex: every Linear of the language model (and the projector).

    The output head and the embeddings are left out unless train_heads: inside a language model
    that carries its own head (BLIP-2's and Kosmos-2's OPT), LoRA on it would save the whole head
    with every adapter, for a layer that only maps the last hidden state to the vocabulary.
    """
    prefixes = [language_model_prefix(model)]
    if train_projector:
        prefixes += [n for n, _ in model.named_modules() if n.split(".")[-1] in PROJECTOR_NAMES]
    heads = [] if train_heads else [m for m in (model.get_output_embeddings(), model.get_input_embeddings())
                                    if m is not None]
    left_out = [n for n, m in model.named_modules() if any(m is head for head in heads)]
    leaves: dict[str, set[str]] = {}
    for name, module in model.named_modules():
        for prefix in prefixes:
            if name.startswith(prefix + ".") and isinstance(module, nn.Linear) and name not in left_out:
                leaves.setdefault(prefix, set()).add(name.split(".")[-1])
    if not leaves:
        raise IllumeError(f"{type(model).__name__} has no linear layers in its language model",
                          "Use a transformer VLM (LoRA needs nn.Linear layers).")
    parts = [rf"{re.escape(p)}(\..*)?\.({'|'.join(sorted(l))})" for p, l in sorted(leaves.items())]
    regex = "|".join(f"(?:{p})" for p in parts)
    if left_out:  # peft full-matches module names: never the head's, whatever its leaf name
        regex = f"(?!(?:{'|'.join(re.escape(n) for n in left_out)})$)(?:{regex})"
    return regex


def add_lora(model: nn.Module, rank: int = 8, alpha: int = 16, dropout: float = 0.0,
             train_projector: bool = False, train_heads: bool = False) -> Any:
    """Freeze the base and wrap it with fresh LoRA adapters (peft)."""
    from peft import LoraConfig, get_peft_model

    for param in model.parameters():
        param.requires_grad_(False)
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, bias="none",
                        target_modules=lora_target_regex(model, train_projector, train_heads))
    return get_peft_model(model, config)


def load_adapter(model: nn.Module, adapter: str, base_model: str) -> Any:
    """Freeze the base and wrap it with a saved adapter whose LoRA weights keep training (warm start);
    the adapter's own settings (rank, alpha, targets) apply. Refused when made for another base."""
    from illume.vlm import apply_adapter

    wrapped = apply_adapter(model, adapter, base_model, merge=False)
    for name, param in wrapped.named_parameters():
        param.requires_grad_("lora_" in name)
    wrapped.peft_config[wrapped.active_adapter].inference_mode = False  # saved as a trainable adapter
    return wrapped


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def weights_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """A fingerprint of trained weights (to check that all ranks hold the same ones)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------- loading under ZeRO 3
_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                       "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                       "U8": torch.uint8, "BOOL": torch.bool}
_HEADER_MAX_BYTES = 100_000_000  # the safetensors format's own limit


class SafetensorsFile:
    """Reads any element range of a tensor in a .safetensors file with plain reads (no mmap).

    A memory map would put every page a rank touches into its resident memory; reading only
    the bytes of this rank's partition keeps loading within the partition's size.
    """

    def __init__(self, path: Path):
        self.path = path
        try:
            self.tensors, self.data_start = _read_header(path)
        except (OSError, ValueError, KeyError, TypeError, struct.error, RecursionError) as exc:
            raise _damaged(path, exc) from exc

    def read(self, name: str, start: int, count: int) -> torch.Tensor:
        """Elements [start, start + count) of the flattened tensor `name`."""
        entry = self.tensors[name]
        dtype = _SAFETENSORS_DTYPES.get(entry["dtype"])
        if dtype is None:
            raise IllumeError(f"{self.path}: tensor {name} has dtype {entry['dtype']}, which cannot be loaded",
                              "Save the model in float32, bfloat16 or float16.")
        item = torch.empty((), dtype=dtype).element_size()
        if count <= 0:
            return torch.empty(0, dtype=dtype)
        offset = self.data_start + entry["data_offsets"][0] + start * item
        fd = os.open(self.path, os.O_RDONLY)
        try:
            raw = bytearray(os.pread(fd, count * item, offset))
        finally:
            os.close(fd)
        return torch.frombuffer(raw, dtype=dtype)

    def numel(self, name: str) -> int:
        return math.prod(self.tensors[name]["shape"])


def _read_header(path: Path) -> tuple[dict[str, dict], int]:
    """(tensor name -> entry, where the data starts); ValueError etc. for a cut or damaged file."""
    with open(path, "rb") as handle:
        file_size = os.fstat(handle.fileno()).st_size
        if file_size < 8:
            raise ValueError(f"it has {file_size} bytes, fewer than the 8 of its header length")
        (length,) = struct.unpack("<Q", handle.read(8))
        # Checked before reading: a damaged length would otherwise make read() allocate it (up to 2**64).
        if not 2 <= length <= min(_HEADER_MAX_BYTES, file_size - 8):
            raise ValueError(f"its header length ({length} bytes) does not fit the file ({file_size} bytes)")
        header = json.loads(handle.read(length))
    if not isinstance(header, dict):
        raise ValueError("its header is not a JSON object")
    header.pop("__metadata__", None)
    data_size = file_size - 8 - length
    for name, entry in header.items():
        _check_entry(name, entry, data_size)
    return header, 8 + length


def _check_entry(name: str, entry: dict, data_size: int) -> None:
    """A tensor's entry is well formed and its bytes lie in the file (a cut download fails here)."""
    begin, end = entry["data_offsets"]
    shape = entry["shape"]
    if not (isinstance(entry["dtype"], str) and isinstance(shape, list)
            and all(isinstance(n, int) and n >= 0 for n in (*shape, begin, end))):
        raise ValueError(f"tensor {name!r} has a malformed entry")
    if not 0 <= begin <= end <= data_size:
        raise ValueError(f"tensor {name!r} lies at bytes {begin}-{end}, past the {data_size} bytes of data")


def _damaged(path: Path, reason: Exception | str) -> IllumeError:
    if isinstance(reason, Exception) and type(reason) is not ValueError:  # plain ValueErrors are our own words
        reason = f"{type(reason).__name__}: {reason}"
    return IllumeError(f"the checkpoint file {path} is incomplete or damaged ({reason})",
                       "Download or save the model again (a partly downloaded model is the usual cause).")


def safetensors_files(model_dir: Path) -> list[Path] | None:
    """The checkpoint's .safetensors files (single or sharded), or None for other formats."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        return [_shard_path(model_dir, index, shard) for shard in sorted(set(_weight_map(index).values()))]
    single = model_dir / "model.safetensors"
    return [single] if single.is_file() else None


def _weight_map(index: Path) -> dict[str, str]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise ValueError("its weight_map is not an object of file names")
        return weight_map
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise _damaged(index, exc) from exc


def _shard_path(model_dir: Path, index: Path, shard: str) -> Path:
    """A shard the index names, refused outside the model directory. Checked on the name, not
    resolved: the Hugging Face cache links a snapshot's files to blobs elsewhere."""
    name = PurePosixPath(shard)
    if not shard or name.is_absolute() or ".." in name.parts:
        raise _damaged(index, f"its weight_map names {shard!r}, which is not a file inside {model_dir}")
    return model_dir / shard


def _checkpoint_to_model_names(model: nn.Module, keys: list[str]) -> dict[str, str] | None:
    """Checkpoint key -> model parameter name, as from_pretrained renames them (legacy layouts,
    base-model prefix); None when a key needs more than renaming (fused or split weights)."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import (
        WeightConverter,
        WeightRenaming,
        rename_source_key,
    )

    transforms = get_model_conversion_mapping(model)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    names = {}
    state = model.state_dict()
    for key in keys:
        name, converter = rename_source_key(key, renamings, converters, model.base_model_prefix, state)
        if converter is not None:
            return None
        names[key] = name
    return names


def keep_big_blocks_out_of_the_heap(threshold: int = 128 << 10) -> None:
    """Allocate blocks of 128 KB and more with mmap, so that freeing them returns the memory.

    glibc raises its mmap threshold after big frees (up to 32 MB), so later blocks land in the
    heap, whose freed space stays with the process. zero.Init materialises each weight whole,
    then frees it once partitioned (measured on 2 ranks: one rank ended up holding the whole
    model's size); activations and ZeRO 3's gathered weights come and go at every step. Measured
    on 2 ranks (the 1.3 B-parameter model of benchmarks/training.py, batch 1), peak per rank with 128 KB
    against 1 MB: ZeRO 3 3542 vs 3776 MB, ZeRO 0 5790 vs 5882 MB. Set for every stage, so that
    the stages differ only in what ZeRO does. A fixed threshold turns the adaptation off (glibc
    only; elsewhere nothing changes).
    """
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, threshold)  # -3: M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def load_partitioned(model_dir: str, ds_config: dict[str, Any]) -> tuple[nn.Module, Any]:
    """The base model for ZeRO 3, partitioned across the ranks from the moment it is built.

    transformers' HfDeepSpeedConfig makes `from_config` build it under deepspeed.zero.Init,
    so each rank only ever allocates its own partition of every weight. Each rank then fills
    its partition by reading exactly those bytes of the safetensors checkpoint: no rank holds
    the whole model, not even while loading (transformers' own from_pretrained under ZeRO 3
    reads the whole checkpoint into rank 0's CPU memory; it remains the fallback for
    checkpoints this loader cannot map key by key).

    Returns (model, the HfDeepSpeedConfig): keep the latter alive while the model is used,
    transformers only holds a weak reference to it (generation under ZeRO 3 relies on it).
    """
    import deepspeed.comm as dist
    from transformers import AutoConfig, AutoModelForImageTextToText
    from transformers.integrations import HfDeepSpeedConfig

    hf_config = HfDeepSpeedConfig(ds_config)
    path = Path(model_dir)
    files = safetensors_files(path) if path.is_dir() else None
    # Headers first: a damaged or partly downloaded file fails at once, naming itself (IllumeError),
    # before the model is built and outside the try below, which would bury that in its own message.
    readers = [SafetensorsFile(f) for f in files or []]
    try:
        if files is None:
            log.warning("%s has no safetensors checkpoint: rank 0 reads it whole (transformers' ZeRO 3 loading)",
                        model_dir)
            return AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32), hf_config
        model = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(model_dir), dtype=torch.float32)
    except Exception as exc:  # transformers raises many types for a broken checkpoint
        raise IllumeError(f"could not build the model from {model_dir} under ZeRO 3: {type(exc).__name__}: {exc}",
                          "Check that the directory is a complete save_pretrained checkpoint of an "
                          "image-text-to-text model.") from exc
    located = {key: reader for reader in readers for key in reader.tensors}
    names = _checkpoint_to_model_names(model, list(located))
    if names is None:
        log.warning("%s needs weight conversions: rank 0 reads it whole (transformers' ZeRO 3 loading)", model_dir)
        del model
        return AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32), hf_config
    rank, world = dist.get_rank(), dist.get_world_size()
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    loaded = set()
    with torch.no_grad():
        for key, name in names.items():
            reader = located[key]
            if name in params:
                _fill_partition(params[name], reader, key, rank, world)
            elif name in buffers:  # buffers are not partitioned: every rank keeps all of it
                buffers[name].copy_(reader.read(key, 0, reader.numel(key)).view_as(buffers[name]))
            else:
                continue
            loaded.add(name)
    missing = sorted(set(params) - loaded)
    if missing:
        log.warning("%d weights are not in the checkpoint and keep their initial values: %s", len(missing),
                    ", ".join(missing[:5]))
    return model, hf_config


def _fill_partition(param: nn.Parameter, reader: SafetensorsFile, key: str, rank: int, world: int) -> None:
    """Copy this rank's slice of the flat weight into its ZeRO 3 partition (param.ds_tensor)."""
    numel = param.ds_numel
    if reader.numel(key) != numel:
        raise IllumeError(f"{reader.path}: {key} has {reader.numel(key)} values, the model expects {numel}",
                          "Use the config.json that was saved with these weights.")
    partition = param.ds_tensor
    size = partition.numel()  # ceil(numel / world): DeepSpeed pads the last rank's partition
    if size * world < numel:
        raise IllumeError(f"unexpected ZeRO 3 partition of {key} ({size} x {world} < {numel})",
                          "Use the DeepSpeed version pinned in pyproject.toml.")
    start = rank * size
    count = max(0, min(size, numel - start))
    partition[:count].copy_(reader.read(key, start, count).to(partition.dtype))


def load_base(model_dir: str, ds_config: dict[str, Any]) -> tuple[Any, Any]:
    """(illume.vlm.VLM on the CPU in float32, HfDeepSpeedConfig or None) for the training job.

    ZeRO 3 builds the model partitioned (load_partitioned); the other stages load it whole on
    every rank, as DeepSpeed replicates it anyway.
    """
    from illume.vlm import VLM, _check_model_dir

    keep_big_blocks_out_of_the_heap()  # every stage: the same allocator whatever ZeRO saves
    if int(ds_config.get("zero_optimization", {}).get("stage", 0)) != 3:
        return VLM.load(model_dir, device="cpu", dtype="float32"), None
    from transformers import AutoProcessor

    _check_model_dir(model_dir)  # the same clear errors as VLM.load
    try:
        processor = AutoProcessor.from_pretrained(model_dir)
    except Exception as exc:
        raise IllumeError(f"could not load the processor from {model_dir}: {type(exc).__name__}: {exc}",
                          "Check that the directory is a complete save_pretrained checkpoint "
                          "(config, weights, processor files) of an image-text-to-text model.") from exc
    model, hf_config = load_partitioned(model_dir, ds_config)
    return VLM(model, processor, model_dir, None, torch.device("cpu")), hf_config
