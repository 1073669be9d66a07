"""The one model in memory, its version, and atomic reloads.

A reload loads the new checkpoint in a background thread, checks it with one generation,
and only then swaps it in under a lock. Batches already running keep their reference to the
old model and finish on it. A checkpoint that fails to load or to generate is refused, the
reason is kept for GET /reload, and the old model keeps serving.

With the diversity remedy on (settings.sampling.base_share > 0), adapters stay unmerged
(VLM.load keep_base) so that part of the candidates can be sampled with the adapter disabled;
reloads load the same way.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from PIL import Image

from illume.errors import IllumeError
from illume.vlm import VLM, Query, SamplingConfig

log = logging.getLogger(__name__)
MAX_REASON_CHARS = 2000  # of a refused reload's reason, kept in GET /reload and its history

Loader = Callable[[str, "str | None"], VLM]


@dataclass(frozen=True)
class Loaded:
    vlm: VLM
    version: str


@dataclass
class ReloadStatus:
    state: str = "idle"  # idle | loading | ready | failed
    model: str | None = None
    adapter: str | None = None
    version: str | None = None  # the version asked for (or derived once loaded)
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    history: list[dict] = field(default_factory=list)


def smoke_test(vlm: VLM) -> None:
    """Finite weights, and one short generation on a blank image (one with the adapter disabled too,
    when it can be) with finite scores: a checkpoint that cannot do this is refused."""
    bad = next((name for name, p in vlm.model.named_parameters() if not torch.isfinite(p).all()), None)
    if bad is not None:
        raise IllumeError(f"the model holds non-finite weights (NaN or inf), first in {bad}",
                          "Train the adapter again (a diverged run writes such weights); the old model keeps serving.")
    query = Query(Image.new("RGB", (32, 32), "gray"), "what is shown", "nothing")
    [found] = vlm.sample([query], SamplingConfig(temperatures=(0.7,), per_temperature=2, max_new_tokens=4,
                                                 base_share=0.5 if vlm.base_available else 0.0), dedupe=False)
    if found and not any(math.isfinite(c.score) for c in found):
        raise IllumeError("the model's candidates all have non-finite scores",
                          "Train the adapter again; the old model keeps serving.")


def processor_side(processor: Any) -> int:
    """The largest side (pixels) the model's image processor resizes or crops to, read once from
    its settings (0 when none can be read). Pixel counts (Qwen2-VL's min/max pixels) count as
    their square root."""
    image_processor = getattr(processor, "image_processor", processor)
    sides = []
    for name in ("size", "crop_size", "max_pixels"):
        value = getattr(image_processor, name, None)
        if isinstance(value, dict):
            named = value.items()
        elif hasattr(value, "__dict__"):  # transformers' SizeDict
            named = vars(value).items()
        else:
            named = [(name, value)]
        sides += [int(v ** 0.5) if "pixels" in key else v for key, v in named
                  if isinstance(v, int) and not isinstance(v, bool) and v > 0]
    return max(sides, default=0)


def _sampling_note(vlm: VLM) -> str:
    return " (adapter kept unmerged: the base share of candidates comes from the model as built)" \
        if vlm.base_available else ""


def _holds(folder: str, name: str, what: str) -> bool:
    """Whether `folder` holds the file `name`; a path the system cannot even look up is refused."""
    try:
        return (Path(folder).expanduser() / name).is_file()
    except (OSError, ValueError, RuntimeError) as exc:  # too long, a NUL byte, ~user without a home
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        shown = repr(folder[:200]) + ("..." if len(folder) > 200 else "")
        raise IllumeError(f"{what} {shown} is not a usable path: {reason}",
                          "Pass a directory on the backend's machine.") from None


class ModelHolder:
    def __init__(self, loaded: Loaded, loader: Loader | None = None, device: str | None = None,
                 dtype: str | None = None, keep_base: bool = False) -> None:
        self._current = loaded
        self._swap_lock = threading.Lock()
        self._reload_lock = threading.Lock()  # one reload at a time
        self.keep_base = keep_base  # reloads keep adapters unmerged (the base-share remedy needs it)
        self._loader = loader or (lambda model, adapter: VLM.load(model, adapter, device=device, dtype=dtype,
                                                                  keep_base=self.keep_base))
        self.status = ReloadStatus(version=loaded.version)
        self.allow_hub_models = False  # /reload names local directories only, unless the operator allows hub ids

    def check_reload(self, model: str, adapter: str | None) -> None:
        """Refuse at once what could only fail later: a model or adapter that is not a local directory."""
        if not _holds(model, "config.json", "model") and not self.allow_hub_models:
            raise IllumeError(f"model {model!r} is not a local directory with config.json (it does not exist, "
                              "or it looks like a hub id, and hub ids are off for reloads)",
                              "Pass a directory written by save_pretrained on the backend's machine, or start the "
                              "backend with --allow-hub-models to let /reload download from the hub.")
        if adapter and not _holds(adapter, "adapter_config.json", "adapter"):
            raise IllumeError(f"adapter {adapter!r} is not a local directory with adapter_config.json",
                              "Pass the `adapter` directory written by the training job.")

    @classmethod
    def load(cls, model: str, adapter: str | None = None, version: str | None = None,
             device: str | None = None, dtype: str | None = None, keep_base: bool = False) -> "ModelHolder":
        vlm = VLM.load(model, adapter, device=device, dtype=dtype, keep_base=keep_base)
        loaded = Loaded(vlm, version or vlm.version)
        log.info("serving %s%s", loaded.version, _sampling_note(vlm))
        return cls(loaded, device=device, dtype=dtype, keep_base=keep_base)

    @property
    def current(self) -> Loaded:
        with self._swap_lock:
            return self._current

    @property
    def version(self) -> str:
        return self.current.version

    def start_reload(self, model: str, adapter: str | None, version: str | None) -> ReloadStatus:
        """Begin loading in the background; refuse when a reload is already running."""
        if not self._reload_lock.acquire(blocking=False):
            raise IllumeError(f"a reload of {self.status.model} is already running",
                              "Wait for it to finish (GET /reload shows its state), then retry.")
        self.status = ReloadStatus(state="loading", model=model, adapter=adapter, version=version,
                                   started_at=time.time(), history=self.status.history)
        threading.Thread(target=self._reload, args=(model, adapter, version), name="illume-reload",
                         daemon=True).start()
        return self.status

    def _reload(self, model: str, adapter: str | None, version: str | None) -> None:
        status = self.status
        try:
            vlm = self._loader(model, adapter)
            smoke_test(vlm)
            loaded = Loaded(vlm, version or vlm.version)
            with self._swap_lock:
                old, self._current = self._current, loaded
            status.state, status.version = "ready", loaded.version
            log.info("reloaded: %s -> %s%s", old.version, loaded.version, _sampling_note(vlm))
        except Exception as exc:  # any failure keeps the old model serving
            reason = exc.what if isinstance(exc, IllumeError) else f"{type(exc).__name__}: {exc}"
            if len(reason) > MAX_REASON_CHARS:  # a shape mismatch lists every layer
                reason = f"{reason[:MAX_REASON_CHARS]}... ({len(reason) - MAX_REASON_CHARS} more characters)"
            status.state, status.error = "failed", f"checkpoint refused: {reason}"
            log.error("reload of %s (adapter %s) refused, still serving %s: %s", model, adapter,
                      self.version, reason)
        finally:
            if status.state == "loading":  # interrupted by a BaseException: say so, never "loading" forever
                status.state, status.error = "failed", "checkpoint refused: the reload was interrupted"
            status.finished_at = time.time()
            status.history.append({k: getattr(status, k) for k in ("state", "model", "adapter", "version", "error")})
            del status.history[:-20]
            self._reload_lock.release()

    def wait_reload(self, timeout: float) -> ReloadStatus:
        """Block until no reload runs (for scripts and tests)."""
        if self._reload_lock.acquire(timeout=timeout):
            self._reload_lock.release()
        return self.status
