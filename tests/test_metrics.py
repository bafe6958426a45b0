from __future__ import annotations

import numpy as np

from bitfit.metrics import compute_metrics, predictions_from_logits
from bitfit.tasks import load_task


def test_cola_mcc_and_accuracy_match_hand_computed_values():
    labels = np.array([1, 1, 0, 0, 1, 0])
    preds = np.array([1, 0, 0, 0, 1, 1])
    # tp=2 tn=2 fp=1 fn=1: mcc = (4 - 1) / sqrt(3 * 3 * 3 * 3) = 1/3
    metrics = compute_metrics(load_task("cola"), preds, labels)

    assert np.isclose(metrics["mcc"], 1 / 3)
    assert np.isclose(metrics["accuracy"], 4 / 6)


def test_a_constant_prediction_scores_zero_correlation_not_nan():
    metrics = compute_metrics(load_task("stsb"), np.full(5, 2.5), np.arange(5.0))

    assert metrics == {"pearson": 0.0, "spearman": 0.0}


def test_mrpc_f1_and_regression_outputs():
    metrics = compute_metrics(load_task("mrpc"), np.array([1, 1, 0, 1]), np.array([1, 0, 0, 1]))
    assert np.isclose(metrics["f1"], 0.8)

    logits = np.array([[0.5], [1.5], [2.0]])
    assert np.allclose(predictions_from_logits(load_task("stsb"), logits), [0.5, 1.5, 2.0])
    assert list(predictions_from_logits(load_task("sst2"), np.array([[0, 1], [2, 1.0]]))) == [1, 0]
