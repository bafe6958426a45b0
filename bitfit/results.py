"""What a training run produced: its evaluations and its ``TrainResult``."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from bitfit.artifacts import save_artifact
from bitfit.methods import RunStatus
from bitfit.models import BaseModel
from bitfit.tasks import Task
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

    def artifact_fields(self) -> dict[str, Any]:
        """What an artifact's manifest records of this run (``artifacts.save_artifact``)."""
        return {"method": self.config.method, "config": asdict(self.config),
                "precision": self.precision, "status": self.status, "message": self.message,
                "best_step": self.best.step if self.best else None, "metrics": self.metrics,
                "best_metrics": self.best_metrics, "train_metrics": self.train_metrics,
                "trainable_params": self.trainable_params,
                "trainable_fraction": self.trainable_fraction}

    def save(self, base: BaseModel, task: Task, out_dir: str | os.PathLike[str], *,
             extra: dict[str, object] | None = None) -> Path:
        """Write the best evaluation's trained tensors as an artifact into ``out_dir``.

        Raises:
            ArtifactError: the run did not complete (it diverged or was stopped); nothing is
                written.
        """
        return save_artifact(self.trained, base, task, out_dir, run=self.artifact_fields(),
                             masks=self.rand_masks, extra=extra)

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
