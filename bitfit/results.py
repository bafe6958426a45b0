"""What a training run produced: its evaluations and its ``TrainResult``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from bitfit.methods import RunStatus
from bitfit.trainconfig import TrainConfig


@dataclass(frozen=True)
class Evaluation:
    """Metrics of every evaluation split at one point of training."""

    step: int
    epoch: float
    metrics: dict[str, dict[str, float]]
    train_loss: float
    main: float  # the task's main metric on the selection split


Callback = Callable[[Evaluation], bool | None]


@dataclass
class TrainResult:
    """What a run produced. ``trained`` holds the best evaluation's trained tensors by name in
    the classifier (``encoder.…``, ``head.…``); ``rand_masks`` the rand baseline's masks."""

    status: RunStatus  # stopped: by the callback; diverged: a NaN or infinite loss
    config: TrainConfig
    precision: str
    evaluations: list[Evaluation]
    best: Evaluation | None
    train_metrics: dict[str, float]
    trained: dict[str, torch.Tensor]
    rand_masks: dict[str, torch.Tensor]
    trainable_params: int
    total_params: int
    wall_time_s: float
    train_time_s: float
    examples_per_second: float
    peak_memory_mb: float
    eval_time_s: float = 0.0  # evaluations, including the train-split metric
    message: str = ""
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def trainable_fraction(self) -> float:
        return self.trainable_params / self.total_params

    @property
    def metrics(self) -> dict[str, dict[str, float]]:
        return self.evaluations[-1].metrics if self.evaluations else {}

    @property
    def best_metrics(self) -> dict[str, dict[str, float]]:
        return self.best.metrics if self.best else {}

    def summary(self) -> dict[str, object]:
        """A JSON-ready summary (no tensors)."""
        return {
            "status": self.status, "message": self.message, "config": asdict(self.config),
            "precision": self.precision, "metrics": self.metrics,
            "best_metrics": self.best_metrics,
            "best_step": self.best.step if self.best else None,
            "train_metrics": self.train_metrics,
            "evaluations": [asdict(e) for e in self.evaluations],
            "trainable_params": self.trainable_params, "total_params": self.total_params,
            "trainable_fraction": self.trainable_fraction, "wall_time_s": self.wall_time_s,
            "train_time_s": self.train_time_s, "eval_time_s": self.eval_time_s,
            "examples_per_second": self.examples_per_second,
            "peak_memory_mb": self.peak_memory_mb,
        }
