"""Helpers shared by the benchmark scripts: paths, output, and how busy the machine was.

Importing this module silences transformers' logging and loading progress bars.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT.parent / "shared" / "data" / "glue"  # ../shared/data/glue from the project root
CACHE_DIR = ROOT / "runs" / "cache"  # git-ignored tokenisation cache

transformers.utils.logging.disable_progress_bar()
transformers.utils.logging.set_verbosity_error()


def log(message: str) -> None:
    """Progress and information go to stderr; stdout carries only the JSON result."""
    print(message, file=sys.stderr, flush=True)


def emit(result: dict[str, object]) -> None:
    """Print the one JSON object a benchmark produces."""
    print(json.dumps(result, indent=2))


def median_ms(seconds: list[float]) -> float:
    return round(statistics.median(seconds) * 1000, 2)


def _cpu_seconds() -> tuple[float, float, float]:
    """(wall clock, CPU busy time of the whole machine, CPU time of this process and its
    children), in seconds; the machine's is 0 where /proc/stat does not exist."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            user, nice, system, _, _, irq, softirq = map(int, f.readline().split()[1:8])
        busy = (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")
    except OSError:
        busy = 0.0
    usage = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    own = sum(u.ru_utime + u.ru_stime for u in usage)
    return time.perf_counter(), busy, own


def cpu_flags() -> list[str]:
    """The CPU's vector and matrix extensions that decide the speed of fp32 and bf16 here."""
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = next((line.split(":", 1)[1].split() for line in f
                          if line.startswith("flags")), [])
    except OSError:
        return []
    return [flag for flag in wanted if flag in flags]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            return next((line.split(":", 1)[1].strip() for line in f
                         if line.startswith("model name")), "")
    except OSError:
        return ""


class Run:
    """Wall time of a benchmark and the CPU time other processes took meanwhile: timings are only
    comparable between runs where ``other_cpu_s`` is near 0 (this machine has few cores)."""

    def __init__(self) -> None:
        self._start = _cpu_seconds()

    def info(self) -> dict[str, object]:
        wall, busy, own = (b - a for a, b in zip(self._start, _cpu_seconds(), strict=True))
        return {"wall_s": round(wall, 1), "other_cpu_s": round(max(busy - own, 0.0), 1),
                "cores": os.cpu_count(), "threads": torch.get_num_threads(),
                "cpu": cpu_model(), "cpu_flags": cpu_flags(), "torch": torch.__version__}
