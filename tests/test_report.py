from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from bitfit.report import (SeedRun, confidence_interval, markdown, pareto_front, plot_curves,
                           plot_seeds, summarise)


def test_confidence_interval_is_the_student_t_interval():
    low, high = confidence_interval([1.0, 2.0, 3.0, 4.0])

    # mean 2.5, sem = sqrt(5/3)/2, t(0.975, df=3) = 3.182446
    half = 3.182446305284263 * math.sqrt(5 / 3) / 2
    assert (low, high) == pytest.approx((2.5 - half, 2.5 + half), abs=1e-9)
    assert math.isnan(confidence_interval([0.5])[0])


def test_the_pareto_front_keeps_what_nothing_beats_with_as_few_parameters():
    points = [(100, 0.70), (1_000, 0.80), (1_000, 0.75), (50, 0.60), (10**6, 0.79),
              (10**6, 0.90), (500, float("nan")), (100, 0.70)]
    # (1000, 0.75) loses to (1000, 0.80); (1e6, 0.79) to (1000, 0.80); the twin points at
    # (100, 0.70) beat neither each other nor are beaten
    assert pareto_front(points) == {0, 1, 3, 5, 7}
    assert pareto_front([]) == set()


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
