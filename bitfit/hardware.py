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


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` picks bf16 where the hardware runs it natively (see ``benchmarks/precision.py``
    for the measurement that lets it), else fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
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
