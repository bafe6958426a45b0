"""The Verdict record and the one-sided t-test machinery that every rule of ``bitfit.verdicts``
shares: scores checked and screened, (estimate, standard error, df) of a mean or a contrast, and the
decision that turns them into a verdict (see ``bitfit.verdicts`` for the rules and edge cases).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


VERDICTS = ("holds", "fails", "inconclusive", "not testable")

# Per-seed scores: a list of floats, or a 1-D numpy array.
Scores = Sequence[float] | np.ndarray

TOO_FEW = "needs at least 2 seeds a side"
NOT_FINITE = "a score is NaN or infinite"


@dataclass(frozen=True)
class Verdict:
    """The outcome of one claim on one task.

    ``estimate`` is the effect (a mean difference or a contrast), ``low`` and ``high`` its two-sided
    (1 - 2 * alpha) interval (the two one-sided (1 - alpha) bounds), ``p_value`` the one-sided
    p-value of the test that supports the claim, ``rule`` one sentence naming the test and its
    threshold, ``note`` why the verdict is inconclusive or not testable (or extra context).
    """

    verdict: str
    estimate: float
    low: float
    high: float
    p_value: float
    rule: str
    note: str = ""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")


# --- internals ---------------------------------------------------------------------------------

def _scores(values: Scores) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1:
        raise ValueError(f"scores must be a flat sequence (one per seed), got shape {array.shape}")
    return array


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")


def _check_pairs(groups: Sequence[np.ndarray], names: Sequence[str]) -> None:
    lengths = [len(g) for g in groups]
    if len(set(lengths)) > 1:
        sizes = ", ".join(f"{n} has {k}" for n, k in zip(names, lengths, strict=True))
        raise ValueError(f"paired scores need one score per seed on every side, but {sizes}")


def _variance(x: np.ndarray) -> float:
    """The sample variance, exactly 0 for a constant sample, NaN below 2 values."""
    if len(x) < 2:
        return math.nan
    if np.ptp(x) == 0:
        return 0.0
    return float(np.var(x, ddof=1))


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if len(x) else math.nan


def _one_sample(x: np.ndarray) -> tuple[float, float, float]:
    if len(x) < 2:
        return _mean(x), math.nan, math.nan
    return _mean(x), math.sqrt(_variance(x) / len(x)), float(len(x) - 1)


def _contrast(groups: Sequence[np.ndarray], weights: Sequence[float]
              ) -> tuple[float, float, float]:
    estimate = float(sum(w * _mean(g) for w, g in zip(weights, groups, strict=True)))
    if any(len(g) < 2 for g in groups):
        return estimate, math.nan, math.nan
    parts = [w * w * _variance(g) / len(g) for w, g in zip(weights, groups, strict=True)]
    total = sum(parts)
    if not total > 0:  # 0 (every side constant) or NaN
        return estimate, math.sqrt(total), math.nan
    df = total ** 2 / sum(v * v / (len(g) - 1) for v, g in zip(parts, groups, strict=True))
    return estimate, math.sqrt(total), float(df)


def _screen(groups: Sequence[np.ndarray]) -> str:
    """Why the groups cannot be tested at all ("" when they can)."""
    if any(len(g) < 2 for g in groups):
        return TOO_FEW
    if not all(np.all(np.isfinite(g)) for g in groups):
        return NOT_FINITE
    return ""


def _test_name(groups: Sequence[np.ndarray], paired: bool) -> str:
    if paired:
        return f"paired t-test on {len(groups[0])} seeds"
    return f"Welch's t-test on {len(groups[0])} and {len(groups[1])} seeds"


def _decide(effect: tuple[float, float, float], threshold: float, alpha: float, rule: str,
            groups: Sequence[np.ndarray]) -> Verdict:
    """The verdict on the claim estimate > threshold, from (estimate, standard error, df)."""
    estimate, se, df = effect
    screened = _screen(groups)
    if screened:
        return Verdict("inconclusive", estimate, math.nan, math.nan, math.nan, rule, screened)
    if se == 0:  # every side constant: the estimate is exact
        if estimate > threshold:
            return Verdict("holds", estimate, estimate, estimate, 0.0, rule,
                           "no seed-to-seed variation: the estimate is exact")
        if estimate < threshold:
            return Verdict("fails", estimate, estimate, estimate, 1.0, rule,
                           "no seed-to-seed variation: the estimate is exact")
        return Verdict("inconclusive", estimate, estimate, estimate, math.nan, rule,
                       f"no seed-to-seed variation and the estimate equals {threshold:g} exactly")
    t = (estimate - threshold) / se
    p_above = float(stats.t.sf(t, df))
    p_below = float(stats.t.cdf(t, df))
    half = float(stats.t.ppf(1 - alpha, df)) * se
    low, high = estimate - half, estimate + half
    if p_above < alpha:
        return Verdict("holds", estimate, low, high, p_above, rule)
    if p_below < alpha:
        return Verdict("fails", estimate, low, high, p_above, rule)
    return Verdict("inconclusive", estimate, low, high, p_above, rule,
                   f"the {100 * (1 - 2 * alpha):g}% interval [{low:.4g}, {high:.4g}] includes "
                   f"{threshold:g}: more seeds would tell")


def _plain_share(groups: Sequence[np.ndarray], names: Sequence[str]) -> str:
    part, whole, floor = (_mean(g) for g in groups)
    gain = whole - floor
    if not (math.isfinite(gain) and gain > 0 and math.isfinite(part)):
        return ""
    return (f"{names[0]} keeps {100 * (part - floor) / gain:.3g}% of the gain of {names[1]} over "
            f"{names[2]} (ratio of means)")


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)
