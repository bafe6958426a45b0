from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from bitfit.report import (SeedRun, confidence_interval, markdown, plot_curves, plot_seeds,
                           summarise, welch)


def test_confidence_interval_is_the_student_t_interval():
    low, high = confidence_interval([1.0, 2.0, 3.0, 4.0])

    # mean 2.5, sem = sqrt(5/3)/2, t(0.975, df=3) = 3.182446
    half = 3.182446305284263 * math.sqrt(5 / 3) / 2
    assert (low, high) == pytest.approx((2.5 - half, 2.5 + half), abs=1e-9)
    assert math.isnan(confidence_interval([0.5])[0])


def test_welch_matches_the_textbook_formula():
    a, b = [0.51, 0.55, 0.49, 0.53], [0.60, 0.58, 0.66, 0.61, 0.59]
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    t = (np.mean(a) - np.mean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))

    statistic, p = welch(a, b)

    assert statistic == pytest.approx(t)
    assert p == pytest.approx(2 * stats.t.sf(abs(t), df))
    assert math.isnan(welch([0.5], b)[1])


def _runs():
    def run(method, seed, value, params):
        return SeedRun(method, seed, {"mcc": value, "accuracy": 0.7}, {"mcc": value + 0.1,
                       "accuracy": 0.8}, [value - 0.1, value], params, params / 1e6,
                       4 * params if method == "full" else 1000, 4_000_000, 2.0, 900.0)
    return [run("bitfit", 0, 0.30, 1000), run("bitfit", 1, 0.34, 1000),
            run("full", 0, 0.40, 1_000_000), run("full", 1, 0.44, 1_000_000)]


def test_summary_has_the_statistics_and_costs_per_method():
    table = summarise(_runs(), ("mcc", "accuracy"))

    bitfit = table.set_index("method").loc["bitfit"]
    assert bitfit["mcc_mean"] == pytest.approx(0.32)
    assert bitfit["mcc_std"] == pytest.approx(np.std([0.30, 0.34], ddof=1))
    assert bitfit["generalisation_gap"] == pytest.approx(0.1)
    assert bitfit["artifact_over_checkpoint"] == pytest.approx(1000 / 4_000_000)
    text = markdown(table, ("mcc", "accuracy"))
    assert "| bitfit | 2 | 0.3200 ± 0.0283" in text and "| full | 2 | 0.4200" in text


def test_plots_are_valid_pngs(tmp_path):
    for path in (plot_seeds(_runs(), "mcc", tmp_path / "seeds.png"),
                 plot_curves(_runs(), "mcc", tmp_path / "curves.png")):
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] > 100
