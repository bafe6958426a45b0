"""The statistical rules that turn per-seed scores into verdicts on the claims of a comparison.

Scores are sequences of floats, one per seed, higher is better. Paired scores share an index:
the i-th score of each side comes from the same seed and the same training data, so the test runs
on the per-seed differences (a one-sample t-test, df = n - 1); unpaired scores are compared with
Welch's t-test and Welch-Satterthwaite degrees of freedom. Every test is one-sided at level
``alpha``: a claim "holds" when its one-sided p-value is below ``alpha`` (equivalently, the lower
(1 - alpha) bound of the estimate clears the threshold), it "fails" when the upper (1 - alpha) bound
is below the threshold (the opposite is significant), and is "inconclusive" otherwise; "not
testable" is for a claim whose premise is missing (``share_of_gain`` with no gain to share). Edge
cases never raise: fewer than 2 seeds on a side (or fewer than 2 pairs) gives "inconclusive" with
the note ``TOO_FEW``, the estimate computed and the bounds and p-value NaN; a non-finite score gives
"inconclusive" likewise; a standard error of exactly 0 (every side constant) makes the estimate
exact, so it is compared with the threshold directly (above: "holds", p 0.0; below: "fails",
p 1.0; equal: "inconclusive", p NaN), with both bounds equal to the estimate. ``holm`` and
``combine`` correct for testing one claim on several tasks. numpy and scipy only, no torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from bitfit.ttest import (NOT_FINITE, TOO_FEW, VERDICTS, Scores, Verdict, _check_alpha,
                          _check_pairs, _contrast, _decide, _join, _one_sample, _plain_share,
                          _scores, _screen, _test_name)

__all__ = ["MARGINS", "NOT_FINITE", "TOO_FEW", "VERDICTS", "Scores", "Verdict", "beats_constant",
           "combine", "competitive", "difference", "holm", "margin_for", "non_inferiority",
           "share_of_gain", "superiority"]

# The non-inferiority margin of each metric, in the metric's own units, fixed before any result.
MARGINS: dict[str, float] = {"accuracy": 0.02, "f1": 0.02, "f1_macro": 0.02, "mcc": 0.03,
                             "pearson": 0.02, "spearman": 0.02}


def margin_for(metric: str) -> float:
    """The non-inferiority margin declared for a metric.

    Args:
        metric: A metric name, as in ``MARGINS`` (e.g. "mcc").

    Returns:
        The margin, in the metric's units.

    Raises:
        ValueError: When no margin is declared for ``metric``.
    """
    try:
        return MARGINS[metric]
    except KeyError:
        raise ValueError(f"no non-inferiority margin is declared for metric {metric!r}; "
                         f"known metrics: {', '.join(sorted(MARGINS))}") from None


def difference(a: Scores, b: Scores, *, paired: bool
               ) -> tuple[float, float, float]:
    """The mean difference a - b, its standard error and degrees of freedom.

    Paired: the mean of the per-seed differences, their standard error and df = n - 1. Unpaired:
    mean(a) - mean(b), the Welch standard error sqrt(s_a^2/n_a + s_b^2/n_b) and the
    Welch-Satterthwaite df. With fewer than 2 values on a side (or 2 pairs) the standard error and
    df are NaN; unpaired with both sides constant the standard error is 0 and df NaN.

    Args:
        a: Scores of the first side, one per seed.
        b: Scores of the second side, one per seed.
        paired: Whether a[i] and b[i] come from the same seed and training data.

    Returns:
        (estimate, standard_error, df).

    Raises:
        ValueError: When ``paired`` and the two sides have different lengths.
    """
    x, y = _scores(a), _scores(b)
    if paired:
        _check_pairs((x, y), ("a", "b"))
        return _one_sample(x - y)
    return _contrast((x, y), (1.0, -1.0))


def non_inferiority(ours: Scores, reference: Scores, margin: float, *,
                    paired: bool, alpha: float = 0.05,
                    names: tuple[str, str] = ("ours", "reference")) -> Verdict:
    """Whether ``ours`` is no worse than ``reference`` by more than ``margin``.

    H0: mean(ours) - mean(reference) <= -margin; H1: > -margin. "holds" when the test rejects H0
    (the lower bound is above -margin), "fails" when the upper bound is below -margin (ours is
    significantly worse by more than the margin), "inconclusive" otherwise.

    Args:
        ours: Our scores, one per seed.
        reference: The reference's scores, one per seed.
        margin: The non-inferiority margin (>= 0), in the metric's units.
        paired: Whether ours[i] and reference[i] share a seed and training data.
        alpha: The one-sided level, in (0, 0.5).
        names: How ``ours`` and ``reference`` are called in the rule and notes.

    Returns:
        The Verdict; its estimate is the mean difference ours - reference.

    Raises:
        ValueError: On a negative or non-finite margin, a bad alpha, or paired sides of
            different lengths.
    """
    if not (math.isfinite(margin) and margin >= 0):
        raise ValueError(f"the non-inferiority margin must be a finite number >= 0, got {margin}")
    _check_alpha(alpha)
    x, y = _scores(ours), _scores(reference)
    if paired:
        _check_pairs((x, y), names)
    threshold = -margin + 0.0  # no "-0" in the rule when the margin is 0
    rule = (f"{_test_name((x, y), paired)}, one-sided: {names[0]} - {names[1]} > {threshold:g} "
            f"(non-inferiority margin {margin:g})")
    return _decide(difference(x, y, paired=paired), threshold, alpha, rule, (x, y))


def superiority(a: Scores, b: Scores, *, paired: bool, alpha: float = 0.05,
                names: tuple[str, str] = ("a", "b")) -> Verdict:
    """Whether mean(a) is greater than mean(b).

    "holds" when the lower bound of a - b is above 0, "fails" when its upper bound is below 0
    (a is significantly worse), "inconclusive" otherwise.

    Args:
        a: Scores of the side claimed better, one per seed.
        b: Scores of the other side, one per seed.
        paired: Whether a[i] and b[i] share a seed and training data.
        alpha: The one-sided level, in (0, 0.5).
        names: How ``a`` and ``b`` are called in the rule and notes.

    Returns:
        The Verdict; its estimate is the mean difference a - b.

    Raises:
        ValueError: On a bad alpha or paired sides of different lengths.
    """
    _check_alpha(alpha)
    x, y = _scores(a), _scores(b)
    if paired:
        _check_pairs((x, y), names)
    rule = f"{_test_name((x, y), paired)}, one-sided: {names[0]} - {names[1]} > 0"
    return _decide(difference(x, y, paired=paired), 0.0, alpha, rule, (x, y))


def beats_constant(values: Scores, constant: float, *, alpha: float = 0.05,
                   name: str = "values") -> Verdict:
    """Whether mean(values) is greater than a constant (e.g. the majority-class score).

    A one-sample t-test (df = n - 1): "holds" when the lower bound of mean(values) - constant is
    above 0, "fails" when its upper bound is below 0, "inconclusive" otherwise.

    Args:
        values: Scores, one per seed.
        constant: The score to beat.
        alpha: The one-sided level, in (0, 0.5).
        name: How ``values`` is called in the rule.

    Returns:
        The Verdict; its estimate is mean(values) - constant.

    Raises:
        ValueError: On a non-finite constant or a bad alpha.
    """
    if not math.isfinite(constant):
        raise ValueError(f"the constant to beat must be finite, got {constant}")
    _check_alpha(alpha)
    x = _scores(values)
    estimate, se, df = _one_sample(x)
    rule = f"one-sample t-test on {len(x)} seeds, one-sided: mean({name}) > {constant:g}"
    return _decide((estimate - constant, se, df), 0.0, alpha, rule, (x,))


def competitive(ours: Scores, reference: Scores, *, metric: str, floor: float, paired: bool,
                alpha: float = 0.05, names: tuple[str, str] = ("ours", "reference")) -> Verdict:
    """Whether ``ours`` is competitive with ``reference``: non-inferior within ``metric``'s
    declared margin (``MARGINS``), tested only where the reference beats ``floor`` (the score of
    always predicting the majority class; 0 for a correlation), else "not testable": two methods
    that both learnt nothing are not competitive, they are equally absent.

    Args:
        ours: Scores of the method the claim is about, one per seed.
        reference: Scores of the method it is compared with, one per seed.
        metric: The metric's name, which sets the margin.
        floor: The constant predictor's score of the metric.
        paired: Whether ours[i] and reference[i] share a seed and training data.
        alpha: The one-sided level of both tests.
        names: How ``ours`` and ``reference`` are called in the rule and notes.

    Returns:
        The non-inferiority Verdict, or "not testable" with the reason in its note.
    """
    margin = margin_for(metric)
    gate = beats_constant(reference, floor, alpha=alpha, name=names[1])
    if gate.verdict != "holds":
        estimate = (float(np.mean(ours) - np.mean(reference)) if len(ours) and len(reference)
                    else math.nan)
        return Verdict("not testable", estimate, math.nan, math.nan, math.nan,
                       f"non-inferiority within {margin:g} once {names[1]} beats the majority "
                       f"class ({floor:.4f})",
                       f"{names[1]} does not beat the majority class's {floor:.4f} "
                       f"({gate.verdict}, p = {gate.p_value:.3g}): nothing to be competitive with")
    return non_inferiority(ours, reference, margin, paired=paired, alpha=alpha, names=names)


def share_of_gain(part: Scores, whole: Scores, floor: Scores, *,
                  share: float = 0.5, paired: bool, alpha: float = 0.05,
                  names: tuple[str, str, str] = ("part", "whole", "floor")) -> Verdict:
    """Whether ``part`` keeps at least ``share`` of the gain of ``whole`` over ``floor``.

    Tested on the linear contrast c = part - share * whole - (1 - share) * floor > 0, not on a
    ratio of means. Paired: a one-sample t-test on the per-seed contrasts. Unpaired: the contrast of
    the means with standard error sqrt(sum v_i), v_i = w_i^2 s_i^2 / n_i for the weights
    (1, -share, -(1 - share)), and df = (sum v_i)^2 / sum(v_i^2 / (n_i - 1)). The claim is "not
    testable" unless ``superiority(whole, floor)`` holds at the same alpha (there is no gain to
    share); too few seeds or a non-finite score make it "inconclusive" before that check. The note
    gives the plain share (mean(part) - mean(floor)) / (mean(whole) - mean(floor)) whenever
    mean(whole) > mean(floor).

    Args:
        part: Scores of the method claimed to keep the gain, one per seed.
        whole: Scores of the method whose gain is shared, one per seed.
        floor: Scores of the baseline the gain is measured from, one per seed.
        share: The share of the gain to keep, in [0, 1].
        paired: Whether part[i], whole[i] and floor[i] share a seed and training data.
        alpha: The one-sided level, in (0, 0.5).
        names: How ``part``, ``whole`` and ``floor`` are called in the rule and notes.

    Returns:
        The Verdict; its estimate is the mean of the contrast.

    Raises:
        ValueError: On a share outside [0, 1], a bad alpha, or paired sides of different lengths.
    """
    if not 0 <= share <= 1:
        raise ValueError(f"share must be in [0, 1], got {share}")
    _check_alpha(alpha)
    groups = (_scores(part), _scores(whole), _scores(floor))
    if paired:
        _check_pairs(groups, names)
    weights = (1.0, -share, -(1.0 - share))
    if paired:
        contrasts = groups[0] + weights[1] * groups[1] + weights[2] * groups[2]
        effect = _one_sample(contrasts)
    else:
        effect = _contrast(groups, weights)
    _, w_name, f_name = names
    rule = _share_rule(groups, share, paired, names)
    plain = _plain_share(groups, names)
    screened = _screen(groups)
    if screened:
        return Verdict("inconclusive", effect[0], math.nan, math.nan, math.nan, rule,
                       _join(screened, plain))
    gate = superiority(groups[1], groups[2], paired=paired, alpha=alpha, names=(w_name, f_name))
    if gate.verdict != "holds":
        note = (f"{w_name} does not beat {f_name} ({gate.verdict}, p = {gate.p_value:.3g}): "
                f"there is no gain to share")
        return Verdict("not testable", effect[0], math.nan, math.nan, math.nan, rule,
                       _join(note, plain))
    verdict = _decide(effect, 0.0, alpha, rule, groups)
    return Verdict(verdict.verdict, verdict.estimate, verdict.low, verdict.high, verdict.p_value,
                   rule, _join(verdict.note, plain))


def _share_rule(groups: Sequence[np.ndarray], share: float, paired: bool,
                names: tuple[str, str, str]) -> str:
    """The rule sentence of ``share_of_gain``: its test and the contrast it tests."""
    p_name, w_name, f_name = names
    test = (_test_name(groups, paired) if paired
            else f"Welch-Satterthwaite t-test of a contrast on "
                 f"{', '.join(str(len(g)) for g in groups[:-1])} and {len(groups[-1])} seeds")
    return (f"{test}, one-sided: {p_name} - {share:g}*{w_name} - {1 - share:g}*{f_name} > 0 "
            f"({p_name} keeps at least {100 * share:g}% of the gain of {w_name} over {f_name}, "
            f"tested once {w_name} beats {f_name})")


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the order given.

    Step-down: with the m non-NaN p-values sorted ascending (ties keep their order), the j-th
    (0-based) is adjusted to max over k <= j of min(1, (m - k) * p_(k)). NaN entries are ignored
    (they do not count in m) and stay NaN.

    Args:
        p_values: p-values in [0, 1], or NaN.

    Returns:
        The adjusted p-values, one per input, NaN where the input was NaN.

    Raises:
        ValueError: On a p-value outside [0, 1].
    """
    p = np.asarray(p_values, dtype=float).reshape(-1)
    known = np.flatnonzero(~np.isnan(p))
    if np.any((p[known] < 0) | (p[known] > 1)):
        raise ValueError(f"p-values must lie in [0, 1] (or be NaN), got {list(p_values)}")
    m = len(known)
    order = known[np.argsort(p[known], kind="stable")]
    adjusted = np.full(p.shape, math.nan)
    adjusted[order] = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    return [float(v) for v in adjusted]


def combine(verdicts: Sequence[Verdict], *, alpha: float = 0.05) -> tuple[str, str]:
    """The overall verdict of one claim over several tasks, with Holm's correction.

    The testable rows are those whose verdict is not "not testable"; their p-values are adjusted
    with ``holm`` (rows with a NaN p-value, such as too few seeds, do not count in m and cannot
    hold). Overall the claim is "not testable" when no row is testable, "fails" when any testable
    row fails, "holds" when every testable row's adjusted p-value is below ``alpha``, and
    "inconclusive" otherwise.

    Args:
        verdicts: One Verdict of the claim per task.
        alpha: The family-wise level, in (0, 0.5).

    Returns:
        (verdict, one sentence of evidence), e.g. ("inconclusive", "holds on 3 of 4 testable
        tasks after Holm's correction (m = 4); 1 not testable").
    """
    _check_alpha(alpha)
    testable = [v for v in verdicts if v.verdict != "not testable"]
    untestable = len(verdicts) - len(testable)
    if not testable:
        return "not testable", f"no testable task: {untestable} not testable"
    adjusted = holm([v.p_value for v in testable])
    m = sum(not math.isnan(p) for p in adjusted)
    held = sum(p < alpha for p in adjusted)  # NaN < alpha is False
    failed = sum(v.verdict == "fails" for v in testable)
    evidence = (f"holds on {held} of {len(testable)} testable tasks after Holm's correction "
                f"(m = {m})")
    if failed:
        evidence += f"; fails on {failed}"
    if untestable:
        evidence += f"; {untestable} not testable"
    if failed:
        return "fails", evidence
    return ("holds" if held == len(testable) else "inconclusive"), evidence

