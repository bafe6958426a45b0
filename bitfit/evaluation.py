"""Scoring a classifier: logits for a split, and the task's metrics on each evaluation split."""

from __future__ import annotations

import numpy as np
import torch

from bitfit.data import Encoded, TaskData, collate, eval_batches
from bitfit.hardware import half_dtype, take_free_cores
from bitfit.interrupts import stop_if_interrupted
from bitfit.metrics import compute_metrics, predictions_from_logits
from bitfit.models import TextClassifier
from bitfit.trainconfig import TrainConfig


@torch.inference_mode()
def predict(model: TextClassifier, data: Encoded, *, batch_size: int, pad_id: int,
            device: torch.device, precision: str = "fp32") -> np.ndarray:
    """Logits for every row of a split, in the split's order."""
    was_training = model.training
    model.eval()
    out = np.zeros((len(data), model.head.out_features), dtype=np.float32)
    for rows in eval_batches(data, batch_size):
        stop_if_interrupted()
        take_free_cores()
        batch = {k: v.to(device) for k, v in collate(data, rows, pad_id=pad_id).items()
                 if k != "labels"}
        half = half_dtype(precision)
        with torch.autocast(device.type, dtype=half or torch.bfloat16, enabled=half is not None):
            out[rows] = model(**batch).float().cpu().numpy()
    model.train(was_training)
    return out


def evaluate(model: TextClassifier, data: TaskData, *, batch_size: int, pad_id: int,
             device: torch.device, precision: str = "fp32") -> dict[str, dict[str, float]]:
    """The task's metrics on each evaluation split."""
    return {
        split: compute_metrics(data.task, predictions_from_logits(
            data.task, predict(model, enc, batch_size=batch_size, pad_id=pad_id, device=device,
                               precision=precision)), enc.labels)
        for split, enc in data.evals.items()
    }


def train_metrics(model: TextClassifier, data: TaskData, config: TrainConfig, *, pad_id: int,
                   device: torch.device, precision: str) -> dict[str, float]:
    # Scored on a seeded sample of the training split: enough for the generalisation gap, and
    # cheap next to training on all of it.
    n = len(data.train)
    rows = np.random.default_rng(config.seed).permutation(n)[: config.train_eval_samples]
    sample = data.train.take(np.sort(rows))
    logits = predict(model, sample, batch_size=config.eval_batch_size, pad_id=pad_id,
                     device=device, precision=precision)
    return compute_metrics(data.task, predictions_from_logits(data.task, logits), sample.labels)
