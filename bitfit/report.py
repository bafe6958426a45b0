"""The multi-seed comparison: per-method statistics, the significance test, the plots.

Given each method's seeded final runs, ``summarise`` gives mean, standard deviation and a 95%
t-interval of each metric, the trainable share, the artifact size against the full checkpoint,
time per epoch, peak memory and the generalisation gap; ``pareto_front`` says which methods no
other beats with as few trainable parameters (the verdicts are ``bitfit.verdicts``'). ``markdown``
and ``plot_*`` render them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats


@dataclass(frozen=True)
class SeedRun:
    """One method's final run with one seed."""

    method: str
    seed: int
    metrics: dict[str, float]  # dev metrics after the last epoch
    train_metrics: dict[str, float]
    curve: list[float]  # the main dev metric after each epoch
    trainable_params: int
    trainable_fraction: float
    artifact_bytes: int
    checkpoint_bytes: int
    time_per_epoch_s: float
    peak_memory_mb: float
    run_id: str = ""
    artifact: str = ""
    test_metrics: dict[str, float] = field(default_factory=dict)  # a --test-file's, if any


def confidence_interval(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean (NaN with fewer than two values)."""
    if len(values) < 2:
        return math.nan, math.nan
    mean, sem = float(np.mean(values)), float(stats.sem(values))
    if sem == 0:
        return mean, mean
    low, high = stats.t.interval(level, len(values) - 1, loc=mean, scale=sem)
    return float(low), float(high)


def pareto_front(points: list[tuple[float, float]]) -> set[int]:
    """The indices of the (cost, score) points on the Pareto front: those that no other point
    beats, i.e. no other has a cost as low or lower with a higher score, or a lower cost with a
    score as high (cost: trainable parameters; score: higher is better). NaN scores are never on
    it."""
    front = set()
    for i, (cost, score) in enumerate(points):
        if score != score:  # NaN
            continue
        beaten = any((c <= cost and s > score) or (c < cost and s >= score)
                     for j, (c, s) in enumerate(points) if j != i and s == s)
        if not beaten:
            front.add(i)
    return front


def plot_pareto(points: list[tuple[str, float, float]], *, ylabel: str, title: str):
    """(label, trainable parameters, score) points on a log axis, the Pareto front joined in
    red; the matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    front = pareto_front([(c, s) for _, c, s in points])
    for i, (label, cost, score) in enumerate(points):
        ax.scatter([cost], [score], color="tab:red" if i in front else "grey", s=18)
        ax.annotate(label, (cost, score), fontsize=7, xytext=(3, 3), textcoords="offset points")
    edge = sorted((points[i][1], points[i][2]) for i in front)
    if edge:
        ax.step([c for c, _ in edge], [s for _, s in edge], where="post", color="tab:red")
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return fig


def summarise(runs: list[SeedRun], metrics: tuple[str, ...]) -> pd.DataFrame:
    """A row per method (in order of first appearance) with the statistics of its seeds."""
    rows = []
    for method in dict.fromkeys(r.method for r in runs):
        mine = [r for r in runs if r.method == method]
        row: dict[str, object] = {"method": method, "seeds": len(mine)}
        for m in metrics:
            values = [r.metrics[m] for r in mine]
            low, high = confidence_interval(values)
            row.update({f"{m}_mean": float(np.mean(values)),
                        f"{m}_std": float(np.std(values, ddof=1)) if len(values) > 1
                        else math.nan, f"{m}_ci_low": low, f"{m}_ci_high": high})
        main = metrics[0]
        row.update({
            "trainable_params": mine[0].trainable_params,
            "trainable_fraction": mine[0].trainable_fraction,
            "artifact_bytes": mine[0].artifact_bytes,
            "artifact_over_checkpoint": mine[0].artifact_bytes / mine[0].checkpoint_bytes,
            "time_per_epoch_s": float(np.mean([r.time_per_epoch_s for r in mine])),
            "peak_memory_mb": float(max(r.peak_memory_mb for r in mine)),
            # NaN where the training split was not scored (TrainConfig.train_eval_samples 0)
            "generalisation_gap": float(np.mean([r.train_metrics.get(main, math.nan)
                                                 - r.metrics[main] for r in mine])),
        })
        rows.append(row)
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame, metrics: tuple[str, ...]) -> str:
    """The comparison as a Markdown table (also readable in a terminal)."""
    header = ["method", "seeds", *[f"{m} mean ± std [95% CI]" for m in metrics],
              "trainable", "artifact", "s/epoch", "peak MB", "gap"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, r in table.iterrows():
        cells = [str(r["method"]), str(r["seeds"])]
        cells += [f"{r[f'{m}_mean']:.4f} ± {r[f'{m}_std']:.4f} "
                  f"[{r[f'{m}_ci_low']:.4f}, {r[f'{m}_ci_high']:.4f}]" for m in metrics]
        cells += [f"{r['trainable_params']:,} ({100 * r['trainable_fraction']:.3f}%)",
                  f"{_size(r['artifact_bytes'])} ({100 * r['artifact_over_checkpoint']:.2f}% "
                  f"of the checkpoint)", f"{r['time_per_epoch_s']:.1f}",
                  f"{r['peak_memory_mb']:.0f}", f"{r['generalisation_gap']:+.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def plot_seeds(runs: list[SeedRun], metric: str, path: Path) -> Path:
    """The dev metric of every seed, and each method's mean with a 95% interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(r.method for r in runs))
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(methods), 4))
    for i, method in enumerate(methods):
        values = [r.metrics[metric] for r in runs if r.method == method]
        ax.scatter([i] * len(values), values, alpha=0.6, label=None)
        low, high = confidence_interval(values)
        mean = float(np.mean(values))
        err = [[mean - low], [high - mean]] if not math.isnan(low) else None
        ax.errorbar([i + 0.15], [mean], yerr=err, fmt="o", color="black", capsize=4)
    ax.set_xticks(range(len(methods)), methods)
    ax.set_ylabel(f"dev {metric}")
    ax.set_title(f"dev {metric} per seed; mean and 95% CI")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_curves(runs: list[SeedRun], metric: str, path: Path) -> Path:
    """Learning curves: each method's mean dev metric after each epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for method in dict.fromkeys(r.method for r in runs):
        curves = [r.curve for r in runs if r.method == method]
        epochs = min(len(c) for c in curves)
        mean = np.mean([c[:epochs] for c in curves], axis=0)
        ax.plot(range(1, epochs + 1), mean, marker="o", label=method)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"dev {metric}")
    ax.legend()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path
