"""A training run's settings (``TrainConfig``) and the arithmetic of its length and rate.

Light to import: NumPy and the method table, no torch model code, so configs, spaces and command
lines can use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bitfit.biases import parse_subset
from bitfit.methods import method

PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # fp16: CUDA only, with loss scaling
SCHEDULES = ("linear", "constant")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a run's outcome (and so is logged with it)."""

    method: str = "bitfit"
    subset: str = "all"
    learning_rate: float = 1e-3
    epochs: int = 3
    batch_size: int = 32
    eval_batch_size: int = 64  # faster than 128 on a CPU (benchmarks/cpu_paths.py)
    warmup_ratio: float = 0.1
    schedule: str = "linear"  # after the warmup: linear decay to 0, or constant
    max_steps: int | None = None  # optimiser steps; when set it replaces epochs
    train_samples: int | None = None  # a sample of the training split drawn with `seed`
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    dropout: float | None = None  # None: the checkpoint's own dropout
    seed: int = 0
    eval_every: int | None = None
    eval_each_epoch: bool = True  # False: after the last epoch only (and every eval_every steps)
    precision: str = "auto"
    group_by_length: bool = True
    train_eval_samples: int = 2000  # 0: the training split is not scored
    select_best: bool = True  # False: keep the last evaluation (final runs never select on dev)
    lora_rank: int = 8  # lora: the adapters' rank (bitfit.lora)

    def __post_init__(self) -> None:
        if method(self.method).takes_subset:  # an unknown method is refused by method()
            parse_subset(self.subset)
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, "
                             f"got {self.schedule!r}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.train_samples is not None and self.train_samples < 1:
            raise ValueError(f"train_samples must be >= 1, got {self.train_samples}")
        if self.eval_every is not None and self.eval_every < 1:
            raise ValueError(f"eval_every must be >= 1 step, got {self.eval_every}")
        if self.train_eval_samples < 0:
            raise ValueError(f"train_eval_samples must be >= 0, got {self.train_eval_samples}")
        if self.lora_rank < 1:
            raise ValueError(f"lora_rank must be >= 1, got {self.lora_rank}")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, "
                             f"got {self.precision!r}")


def total_steps_of(config: TrainConfig, train_rows: int) -> int:
    """Optimiser steps of a run: ``max_steps`` when set, else every batch of every epoch."""
    if config.max_steps is not None:
        return config.max_steps
    return math.ceil(train_rows / config.batch_size) * config.epochs


def lr_sum(config: TrainConfig, train_rows: int) -> float:
    """The sum of the learning rate over every step of a run: with Adam no coordinate moves
    much further than this, so a tensor's change divided by it says how much of the allowed
    movement it used (1: the same direction at every step; near 0: no signal)."""
    total = total_steps_of(config, train_rows)
    warmup = int(config.warmup_ratio * total)
    steps = np.arange(total, dtype=np.float64)
    factor = np.where(steps < warmup, steps / max(1, warmup),
                      1.0 if config.schedule == "constant"
                      else np.maximum(0.0, (total - steps) / max(1, total - warmup)))
    return float(config.learning_rate * np.sum(factor))


def epochs_of(config: TrainConfig, train_rows: int) -> float:
    """Passes over the training split that a run makes (a fraction with ``max_steps``)."""
    return total_steps_of(config, train_rows) / math.ceil(train_rows / config.batch_size)
