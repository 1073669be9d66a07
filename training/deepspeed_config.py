"""DeepSpeed configuration: the JSON files shipped in this package, "auto" values filled from the flags."""
from __future__ import annotations

import copy
import os
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from illume.errors import IllumeError
from illume.ports import free_port
from illume.records import read_json_object
from training.config import TrainConfig

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable  # Python 3.11+; annotations only

STAGES = (0, 2, 3)


def template_path(zero: int) -> Traversable:
    if zero not in STAGES:
        raise IllumeError(f"ZeRO stage {zero} is not offered", f"Use --zero with one of {', '.join(map(str, STAGES))}.")
    return files("training") / f"ds_zero{zero}.json"  # package data


def read_config(config: TrainConfig) -> dict[str, Any]:
    path = Path(config.deepspeed_config) if config.deepspeed_config else template_path(config.zero)
    if not path.is_file():
        raise IllumeError(f"DeepSpeed config {path} does not exist", "Pass an existing JSON file to --deepspeed-config.")
    return read_json_object(path, "Fix the DeepSpeed config (start from training/ds_zero0.json) or drop "
                                  "--deepspeed-config.")


def _fill(node: Any, values: dict[str, Any]) -> Any:
    """Replace every "auto" leaf whose key is in values."""
    if isinstance(node, dict):
        return {k: (values[k] if v == "auto" and k in values else _fill(v, values)) for k, v in node.items()}
    return node


def build(config: TrainConfig, device: torch.device, total_steps: int) -> dict[str, Any]:
    """The final DeepSpeed config for this run: bf16 on GPU, fp32 on CPU, optional CPU offload."""
    data = copy.deepcopy(read_config(config))
    on_gpu = device.type == "cuda"
    bf16 = on_gpu and torch.cuda.is_bf16_supported()
    values = {
        "train_micro_batch_size_per_gpu": config.batch_size,
        "gradient_accumulation_steps": config.grad_accum,
        "lr": config.lr, "warmup_max_lr": config.lr, "betas": list(config.betas),
        "weight_decay": config.weight_decay, "torch_adam": not on_gpu,
        # No warm-up asked: one "warm-up" step that already runs at the full rate.
        "warmup_min_lr": 0.0 if config.warmup_steps > 0 else config.lr,
        "warmup_num_steps": max(1, config.warmup_steps), "total_num_steps": max(1, total_steps, config.warmup_steps + 1),
    }
    data = _fill(data, values)
    if data.get("bf16", {}).get("enabled") == "auto":
        data["bf16"]["enabled"] = bf16
    if not on_gpu and (data.get("fp16", {}).get("enabled") is True):
        raise IllumeError("the DeepSpeed config enables fp16, which needs a GPU, but this run is on the CPU",
                          "Drop fp16 from the config (the CPU trains in fp32), or run on a GPU machine.")
    if data.get("train_batch_size") == "auto":
        data.pop("train_batch_size")
    zero = data.setdefault("zero_optimization", {"stage": config.zero})
    if config.offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": on_gpu}
        if zero.get("stage") == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": on_gpu}
    leftover = _autos(data)
    if leftover:
        raise IllumeError(f"DeepSpeed config keeps \"auto\" for {', '.join(leftover)}, which the job cannot fill",
                          "Give those keys values in the file passed to --deepspeed-config.")
    return data


def _autos(node: Any, path: str = "") -> list[str]:
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _autos(v, f"{path}.{k}" if path else k)]
    return [path] if node == "auto" else []


def start_process_group() -> tuple[int, int]:
    """(rank, world size) of this process. Under the deepspeed launcher (RANK in the environment)
    DeepSpeed joins the launcher's world. Alone, a world of one is started here over a TCP port
    picked free, without RANK/MASTER_PORT in os.environ (child processes must not mistake it for a
    launcher's world); a port that another process takes between the pick and the bind is picked again."""
    import torch.distributed as dist

    if "RANK" not in os.environ:
        # DeepSpeed asserts LOCAL_RANK on every engine, also when this process's world of one is
        # already up (a second job in one process); a child inheriting it is right too.
        os.environ.setdefault("LOCAL_RANK", "0")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if "RANK" in os.environ:
        import deepspeed

        deepspeed.init_distributed()
        release_shm_buffer()
        return dist.get_rank(), dist.get_world_size()
    from deepspeed.accelerator import get_accelerator

    for attempt in range(5):
        try:
            dist.init_process_group(get_accelerator().communication_backend_name(),
                                    init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
            return 0, 1
        except dist.DistNetworkError:  # EADDRINUSE: taken after the pick
            if attempt == 4:
                raise
    raise AssertionError("unreachable")




SHM_DIR = Path("/dev/shm")


def shm_buffer_path(rank: int) -> Path:
    """The shared-memory file DeepSpeed's CPU all-reduce creates for `rank` (csrc/cpu/comm/shm.cpp)."""
    return SHM_DIR / (f"deepspeed_allreduce_buffer_{os.getuid()}_{os.environ.get('MASTER_ADDR', '')}"
                      f"_{os.environ.get('MASTER_PORT', '')}_{rank}")


def release_shm_buffer() -> None:
    """Unlink this rank's CPU all-reduce buffer once every rank has mapped it.

    DeepSpeed never unlinks these (about 66 MB per rank and run), so /dev/shm fills up run after run.
    The mappings stay valid after the unlink, and a killed rank leaves nothing behind either."""
    import torch.distributed as dist

    if dist.get_world_size() > 1:
        dist.barrier()  # a rank's shm_initialize returns once it has opened its peers' files: wait for all
    # Absent on GPU backends and in worlds spread over several machines.
    shm_buffer_path(dist.get_rank()).unlink(missing_ok=True)
