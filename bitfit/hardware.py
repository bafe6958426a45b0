"""The hardware a run is on: the device, the precision ``auto`` picks, and peak memory."""

from __future__ import annotations

import platform
import resource
from typing import Any

import torch


# In a process of a group that shares the CPU cores (bitfit.pool): the group's count of processes
# still working (a multiprocessing Value) and the cores
_GROUP: list[tuple[Any, int]] = []


def share_cores(working: Any | None, cores: int = 0) -> None:
    """Join this process to a group sharing ``cores`` (``working`` counts its busy processes,
    kept by the group's parent), or leave it (None)."""
    _GROUP[:] = [] if working is None else [(working, cores)]


def take_free_cores() -> None:
    """Between steps: train with the cores over the processes still working, so that when the
    others of the group are done, the last ones use the cores they left (on 2 cores a trial
    trains 1.5 times as fast with 2 threads as with 1). Outside a group, nothing."""
    if not _GROUP:
        return
    working, cores = _GROUP[0]
    want = max(1, cores // max(1, working.value))
    if want != torch.get_num_threads():
        torch.set_num_threads(want)


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has native bf16 matrix instructions (AVX512-BF16 or AMX)."""
    if platform.system() != "Linux":
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def gpu_has_fast_bf16(device: torch.device) -> bool:
    """Whether this GPU computes in bf16 natively: an NVIDIA GPU of compute capability 8.0
    (Ampere) or later, or an AMD GPU (ROCm). Older NVIDIA GPUs only emulate it, which torch's
    ``is_bf16_supported()`` counts as support by default."""
    if torch.version.hip:
        return True
    return torch.cuda.get_device_capability(device)[0] >= 8


_HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}


def half_dtype(precision: str) -> torch.dtype | None:
    """The dtype autocast computes in at a resolved precision; None for fp32."""
    return _HALF.get(precision)


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse fp16 off a CUDA GPU: its loss scaling is the GPUs' recipe, and on a CPU bf16 is
    the half precision to use (fp32's range, so no loss scaling)."""
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision fp16 (with loss scaling) is for CUDA GPUs, and this run is "
                         f"on {device.type}: use --precision bf16 or fp32 there, or auto")


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` picks bf16 where the hardware runs it natively (see ``benchmarks/precision.py``
    for the measurement that lets it on a CPU), fp16 with loss scaling on a GPU without it, else
    fp32. fp16 off a GPU is refused (``check_precision``)."""
    check_precision(precision, device)
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if gpu_has_fast_bf16(device) else "fp16"
    return "bf16" if device.type == "cpu" and cpu_has_fast_bf16() else "fp32"


def resolve_device(device: str = "auto") -> torch.device:
    return torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                        "cpu" if device == "auto" else device)


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak: CUDA's allocator statistics, or Linux's peak RSS (``clear_refs``)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        pass  # not Linux: the peak stays the process's since it started


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory since ``reset_peak_memory``: CUDA's allocator peak on a GPU, the peak RSS
    (resident set, model included) on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
