"""How a pipeline's networks run, beside what they are: the optional `runtime` section.

- `precision: bf16` runs the networks under `torch.autocast(dtype=bfloat16)`: convolutions and
  matmuls in bfloat16, reductions, norms and softmaxes in float32 (autocast's own lists). On CPUs
  with AVX512-BF16 or AMX that roughly doubles convolution throughput; elsewhere oneDNN emulates
  it, slower than float32, so `bf16` on such a CPU falls back to float32 with a warning.
  Results change slightly (about 8 mantissa bits), more for some networks than others (XFeat's
  keypoint heat map is sensitive, DISK's is not), so `extractor_precision` / `matcher_precision`
  override `precision` for one part. docs/results.md gives the measured effect.
- `compile: true` wraps the extractor (or the dense model) in `torch.compile` (inductor; needs a C++
  compiler on CPU). The first call of each image size compiles, which takes minutes on a small CPU.
  Matchers are left eager: LightGlue's pruning changes the keypoint count at every layer, so a
  compiled matcher recompiles on every pair until torch gives up (measured: docs/results.md).

- `keep_memory: true` (the default) asks glibc to serve allocations up to 32 MB from its heap and
  not to hand freed memory back to the OS (`mallopt`, once per process, Linux with glibc only).
  CPU inference allocates the same large buffers on every call; returned to the OS, each comes back
  zeroed page by page, and those page faults were 13 % of ALIKED + LightGlue's time. The cost is that
  the process keeps its peak heap after a call. Set it false in processes that must shrink.

precision and compile are off by default: docs/results.md § Speed has the measurements behind that.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import sys

import torch
from omegaconf import DictConfig

from .errors import ConfigError

DEFAULTS = {
    "keep_memory": True,  # glibc keeps freed memory for the next call (see above)
    "precision": "fp32",  # every network: fp32 | bf16
    "extractor_precision": None,  # None: `precision`
    "matcher_precision": None,  # None: `precision` (also the dense model's)
    "compile": False,
}
PRECISIONS = ("fp32", "bf16")
log = logging.getLogger(__name__)
_warned: set[str] = set()
_memory_kept = False
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
HEAP_UP_TO = 32 << 20  # glibc's largest allowed mmap threshold on 64-bit systems


def check_conf(conf: DictConfig | dict) -> None:
    for key in ("precision", "extractor_precision", "matcher_precision"):
        if conf[key] not in (*PRECISIONS, *((None,) if key != "precision" else ())):
            raise ConfigError(
                f"runtime.{key} must be one of {', '.join(PRECISIONS)}, got '{conf[key]}'"
            )


def bf16_supported(device: torch.device) -> bool:
    """Whether bfloat16 arithmetic is native on `device` (not emulated)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def autocast_dtype(
    conf: DictConfig | dict | None, part: str, device: torch.device
) -> torch.dtype | None:
    """The autocast dtype a pipeline asks for its `part` ("extractor" | "matcher") and `device`
    supports; None = float32."""
    precision = (conf or {}).get(f"{part}_precision") or (conf or {}).get("precision", "fp32")
    if precision == "fp32":
        return None
    if not bf16_supported(device):
        if device.type not in _warned:  # once per process: presets ask for it too
            _warned.add(device.type)
            log.warning("runtime bf16: %s has no native bfloat16; running float32", device)
        return None
    return torch.bfloat16


def autocast(dtype: torch.dtype | None, device: torch.device):
    """A context that runs the networks at `dtype` (from `autocast_dtype`); a no-op for None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def maybe_compile(model: torch.nn.Module, conf: DictConfig | dict | None) -> torch.nn.Module:
    """`model`, wrapped in torch.compile when the runtime section asks for it."""
    if not conf or not conf.get("compile", False):
        return model
    return torch.compile(model)


def keep_memory(conf: DictConfig | dict | None) -> bool:
    """Apply `keep_memory` for this process (once); whether glibc's allocator is now tuned."""
    global _memory_kept
    if _memory_kept or not (conf or DEFAULTS).get("keep_memory", True):
        return _memory_kept
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(M_MMAP_THRESHOLD, HEAP_UP_TO) and libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
    except (OSError, AttributeError):  # not glibc (musl, ...): its allocator stays as it is
        return False
    _memory_kept = bool(ok)
    return _memory_kept
