"""Task metrics from scikit-learn and scipy: MCC, F1, accuracy, Pearson and Spearman."""

from __future__ import annotations

import warnings

import numpy as np
from scipy.stats import ConstantInputWarning, pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from bitfit.tasks import Task


def _correlation(fn, predictions: np.ndarray, labels: np.ndarray) -> float:
    # A constant prediction has no correlation; scipy warns and returns NaN, which we report as 0
    # so that a collapsed model scores as badly as it is, not as a missing value.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)
        value = float(fn(predictions, labels)[0])
    return 0.0 if np.isnan(value) else value


_METRICS = {
    "mcc": lambda p, y: float(matthews_corrcoef(y, p)),
    "accuracy": lambda p, y: float(accuracy_score(y, p)),
    "f1": lambda p, y: float(f1_score(y, p, zero_division=0.0)),
    "f1_macro": lambda p, y: float(f1_score(y, p, average="macro", zero_division=0.0)),
    "pearson": lambda p, y: _correlation(pearsonr, p, y),
    "spearman": lambda p, y: _correlation(spearmanr, p, y),
}


def predictions_from_logits(task: Task, logits: np.ndarray) -> np.ndarray:
    """Class ids (argmax) for classification, the single output for regression."""
    return logits[:, 0] if task.is_regression else logits.argmax(axis=-1)


def compute_metrics(task: Task, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Score predictions with each of the task's metrics.

    Args:
        task: the task, whose ``metrics`` name what to compute.
        predictions: class ids, or floats for a regression task.
        labels: gold labels of the same length.
    """
    return {name: _METRICS[name](predictions, labels) for name in task.metrics}


def constant_score(task: Task, train_labels: np.ndarray, labels: np.ndarray) -> float:
    """The main metric of always predicting the training labels' most frequent class (their
    mean for regression, which correlates with nothing: 0): what a model that learnt only the
    label prior scores. A comparison with a method that does not beat it has nothing to test."""
    if task.is_regression:
        constant = np.full(len(labels), float(np.mean(train_labels)))
    else:
        constant = np.full(len(labels), np.bincount(train_labels.astype(int)).argmax())
    return compute_metrics(task, constant, labels)[task.main_metric]
