"""The verdict rules of bitfit.verdicts against independent scipy computations on known numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from bitfit.verdicts import (MARGINS, TOO_FEW, VERDICTS, Verdict, beats_constant, combine,
                             difference, holm, margin_for, non_inferiority, share_of_gain,
                             superiority)

OURS = np.array([0.801, 0.823, 0.790, 0.815, 0.808])
REFERENCE = np.array([0.812, 0.830, 0.805, 0.818, 0.826])
FLOOR = np.array([0.691, 0.702, 0.688, 0.699, 0.705])
OTHER = np.array([0.795, 0.840, 0.781, 0.826, 0.809, 0.818])  # 6 seeds, for unpaired tests


def _verdict(name: str, p: float) -> Verdict:
    return Verdict(name, 0.0, 0.0, 0.0, p, "rule")


# --- p-values against scipy --------------------------------------------------------------------

def test_paired_non_inferiority_p_value_is_ttest_1samp_of_differences_plus_margin():
    v = non_inferiority(OURS, REFERENCE, 0.02, paired=True)
    expected = stats.ttest_1samp(OURS - REFERENCE + 0.02, 0, alternative="greater").pvalue
    assert v.p_value == pytest.approx(expected, rel=1e-10)
    assert v.estimate == pytest.approx(np.mean(OURS - REFERENCE))


def test_unpaired_non_inferiority_p_value_is_welch_on_ours_plus_margin():
    v = non_inferiority(OTHER, REFERENCE, 0.02, paired=False)
    expected = stats.ttest_ind(OTHER + 0.02, REFERENCE, equal_var=False,
                               alternative="greater").pvalue
    assert v.p_value == pytest.approx(expected, rel=1e-10)


def test_paired_superiority_p_value_is_ttest_rel():
    v = superiority(REFERENCE, OURS, paired=True)
    expected = stats.ttest_rel(REFERENCE, OURS, alternative="greater").pvalue
    assert v.p_value == pytest.approx(expected, rel=1e-10)


def test_unpaired_superiority_p_value_is_welch_ttest_ind():
    v = superiority(OTHER, FLOOR, paired=False)
    expected = stats.ttest_ind(OTHER, FLOOR, equal_var=False, alternative="greater").pvalue
    assert v.p_value == pytest.approx(expected, rel=1e-10)


def test_difference_gives_welch_standard_error_and_satterthwaite_df():
    estimate, se, df = difference(OTHER, REFERENCE, paired=False)
    result = stats.ttest_ind(OTHER, REFERENCE, equal_var=False)
    assert estimate == pytest.approx(OTHER.mean() - REFERENCE.mean())
    assert estimate / se == pytest.approx(result.statistic, rel=1e-10)
    assert df == pytest.approx(result.df, rel=1e-10)


def test_difference_paired_uses_per_seed_differences_with_n_minus_1_df():
    estimate, se, df = difference(OURS, REFERENCE, paired=True)
    diffs = OURS - REFERENCE
    assert (estimate, se, df) == pytest.approx((diffs.mean(), stats.sem(diffs), 4))


def test_beats_constant_p_value_is_ttest_1samp():
    v = beats_constant(FLOOR, 0.69)
    assert v.p_value == pytest.approx(
        stats.ttest_1samp(FLOOR, 0.69, alternative="greater").pvalue, rel=1e-10)
    assert v.estimate == pytest.approx(FLOOR.mean() - 0.69)


def test_paired_share_of_gain_p_value_is_ttest_1samp_on_per_seed_contrasts():
    v = share_of_gain(OURS, REFERENCE, FLOOR, share=0.8, paired=True)
    contrasts = OURS - 0.8 * REFERENCE - 0.2 * FLOOR
    assert v.estimate == pytest.approx(contrasts.mean())
    assert v.p_value == pytest.approx(
        stats.ttest_1samp(contrasts, 0, alternative="greater").pvalue, rel=1e-10)


def test_unpaired_share_of_gain_uses_the_contrast_t_and_three_group_satterthwaite_df():
    part, whole, floor = OTHER, REFERENCE, FLOOR[:4]
    v = share_of_gain(part, whole, floor, share=0.9, paired=False)
    w = (1.0, -0.9, -0.1)
    groups = (part, whole, floor)
    contrast = sum(wi * g.mean() for wi, g in zip(w, groups, strict=True))
    parts = [wi**2 * g.var(ddof=1) / len(g) for wi, g in zip(w, groups, strict=True)]
    se = math.sqrt(sum(parts))
    df = sum(parts) ** 2 / sum(p**2 / (len(g) - 1) for p, g in zip(parts, groups, strict=True))
    assert v.estimate == pytest.approx(contrast)
    assert v.p_value == pytest.approx(stats.t.sf(contrast / se, df), rel=1e-10)
    half = stats.t.ppf(0.95, df) * se
    assert (v.low, v.high) == pytest.approx((contrast - half, contrast + half))


@pytest.mark.parametrize("alpha", [0.05, 0.025])
@pytest.mark.parametrize("paired", [True, False])
def test_interval_is_the_two_sided_one_minus_two_alpha_t_interval(paired, alpha):
    v = superiority(OURS, REFERENCE, paired=paired, alpha=alpha)
    _, se, df = difference(OURS, REFERENCE, paired=paired)
    expected = stats.t.interval(1 - 2 * alpha, df, loc=v.estimate, scale=se)
    assert (v.low, v.high) == pytest.approx(expected, rel=1e-10)


# --- where each verdict comes out --------------------------------------------------------------

def test_a_clear_gain_holds():
    v = superiority(REFERENCE, FLOOR, paired=True, names=("full", "majority"))
    assert v.verdict == "holds" and v.p_value < 0.05 and v.low > 0
    assert v.rule == "paired t-test on 5 seeds, one-sided: full - majority > 0"


def test_a_clear_loss_fails():
    v = superiority(FLOOR, REFERENCE, paired=False)
    assert v.verdict == "fails" and v.high < 0 and v.p_value > 0.95


def test_non_inferiority_holds_within_the_margin_and_names_the_margin():
    v = non_inferiority(OURS, REFERENCE, 0.03, paired=True, names=("bitfit", "full"))
    assert v.verdict == "holds" and v.low > -0.03
    assert v.rule == ("paired t-test on 5 seeds, one-sided: bitfit - full > -0.03 "
                      "(non-inferiority margin 0.03)")


def test_non_inferiority_fails_when_significantly_worse_by_more_than_the_margin():
    v = non_inferiority(FLOOR, REFERENCE, 0.02, paired=True)
    assert v.verdict == "fails" and v.high < -0.02


def test_wide_spread_is_inconclusive_with_the_interval_in_the_note():
    noisy = np.array([0.60, 0.95, 0.70, 0.90, 0.75])
    v = non_inferiority(noisy, REFERENCE, 0.02, paired=True)
    assert v.verdict == "inconclusive" and v.low < -0.02 < v.high
    assert v.note.startswith("the 90% interval [") and "includes -0.02" in v.note


def test_beats_constant_holds_fails_and_is_inconclusive():
    assert beats_constant(FLOOR, 0.6).verdict == "holds"
    assert beats_constant(FLOOR, 0.8).verdict == "fails"
    assert beats_constant([0.5, 0.9, 0.6], 0.66).verdict == "inconclusive"


def test_share_of_gain_holds_when_part_keeps_most_of_the_gain():
    v = share_of_gain(OURS, REFERENCE, FLOOR, share=0.5, paired=True,
                      names=("bitfit", "full", "majority"))
    assert v.verdict == "holds"
    plain = (OURS.mean() - FLOOR.mean()) / (REFERENCE.mean() - FLOOR.mean())
    assert f"bitfit keeps {100 * plain:.3g}% of the gain of full over majority" in v.note


def test_share_of_gain_fails_when_part_keeps_little_of_the_gain():
    part = FLOOR + 0.01
    assert share_of_gain(part, REFERENCE, FLOOR, share=0.5, paired=True).verdict == "fails"


def test_share_of_gain_is_not_testable_when_whole_does_not_beat_floor():
    v = share_of_gain(OURS, FLOOR, REFERENCE, paired=True, names=("bitfit", "full", "majority"))
    assert v.verdict == "not testable" and math.isnan(v.p_value)
    assert v.note.startswith("full does not beat majority (fails, p = ")
    assert "there is no gain to share" in v.note


# --- edge cases --------------------------------------------------------------------------------

def test_zero_variance_decides_on_the_exact_estimate():
    a, b = [0.5, 0.75, 0.25], [0.25, 0.5, 0.0]  # differences exactly 0.25
    held = superiority(a, b, paired=True)
    assert (held.verdict, held.p_value, held.low, held.high) == ("holds", 0.0, 0.25, 0.25)
    failed = superiority(b, a, paired=True)
    assert (failed.verdict, failed.p_value) == ("fails", 1.0)
    tied = non_inferiority(b, a, 0.25, paired=True)
    assert tied.verdict == "inconclusive" and math.isnan(tied.p_value)
    unpaired = superiority([0.5, 0.5], [0.25, 0.25, 0.25], paired=False)
    assert (unpaired.verdict, unpaired.p_value) == ("holds", 0.0)


def test_fewer_than_two_seeds_is_inconclusive_with_the_estimate_and_nan_bounds():
    for v in (superiority([0.8], [0.7, 0.72], paired=False),
              non_inferiority([0.8], [0.7], 0.02, paired=True),
              beats_constant([0.8], 0.5),
              share_of_gain([0.8, 0.81], [0.9, 0.91], [0.5], paired=False)):
        assert v.verdict == "inconclusive" and v.note.startswith(TOO_FEW)
        assert math.isfinite(v.estimate)
        assert math.isnan(v.low) and math.isnan(v.high) and math.isnan(v.p_value)


def test_a_nan_score_is_inconclusive_not_an_error():
    v = superiority([0.8, math.nan, 0.82], [0.7, 0.71, 0.72], paired=True)
    assert v.verdict == "inconclusive" and "NaN" in v.note


def test_paired_scores_of_different_lengths_raise():
    with pytest.raises(ValueError, match="one score per seed"):
        difference(OURS, OTHER, paired=True)
    with pytest.raises(ValueError, match="one score per seed"):
        non_inferiority(OURS, OTHER, 0.02, paired=True)
    with pytest.raises(ValueError, match="one score per seed"):
        share_of_gain(OURS, REFERENCE, OTHER, paired=True)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="margin"):
        non_inferiority(OURS, REFERENCE, -0.02, paired=True)
    with pytest.raises(ValueError, match="alpha"):
        superiority(OURS, REFERENCE, paired=True, alpha=0.5)
    with pytest.raises(ValueError, match="share"):
        share_of_gain(OURS, REFERENCE, FLOOR, share=1.5, paired=True)
    with pytest.raises(ValueError, match="verdict"):
        Verdict("maybe", 0.0, 0.0, 0.0, 0.5, "rule")


def test_margin_for_gives_the_declared_margin_and_names_the_known_metrics():
    assert margin_for("mcc") == 0.03 == MARGINS["mcc"]
    with pytest.raises(ValueError, match="'bleu'.*accuracy, f1, f1_macro, mcc, pearson, spearman"):
        margin_for("bleu")


# --- Holm and the overall verdict --------------------------------------------------------------

def test_holm_matches_a_hand_worked_example_and_keeps_nan():
    adjusted = holm([0.01, 0.04, 0.03, math.nan])
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(adjusted[3])
    assert holm([0.5, 0.4]) == pytest.approx([0.8, 0.8])
    assert holm([0.9, 0.8, 0.7]) == pytest.approx([1.0, 1.0, 1.0])


def test_holm_steps_down_with_ties_and_keeps_the_order():
    # by hand: sorted 0.003*6, 0.012*5, 0.04*4, 0.04*3 (raised to 0.16), 0.2*2, 0.6*1
    p = [0.012, 0.2, 0.003, 0.04, 0.04, 0.6]
    assert holm(p) == pytest.approx([0.06, 0.4, 0.018, 0.16, 0.16, 0.6])


def test_combine_holds_only_when_every_testable_row_survives_holm():
    rows = [_verdict("holds", 0.001), _verdict("holds", 0.01), _verdict("not testable", math.nan)]
    verdict, evidence = combine(rows)
    assert verdict == "holds"
    assert evidence == ("holds on 2 of 2 testable tasks after Holm's correction (m = 2); "
                        "1 not testable")
    # each row holds alone at 0.05, but Holm raises the smaller p to 0.03 * 2
    assert combine([_verdict("holds", 0.03), _verdict("holds", 0.04)])[0] == "inconclusive"


def test_combine_fails_when_any_testable_row_fails():
    verdict, evidence = combine([_verdict("holds", 0.001), _verdict("fails", 0.99)])
    assert verdict == "fails" and "fails on 1" in evidence


def test_combine_is_not_testable_without_a_testable_row():
    assert combine([_verdict("not testable", math.nan)])[0] == "not testable"
    assert combine([])[0] == "not testable"


def test_combine_is_inconclusive_when_a_row_has_too_few_seeds():
    rows = [_verdict("holds", 0.001), _verdict("inconclusive", math.nan)]
    assert combine(rows) == ("inconclusive",
                             "holds on 1 of 2 testable tasks after Holm's correction (m = 1)")


def test_verdict_values_are_the_four_declared():
    assert VERDICTS == ("holds", "fails", "inconclusive", "not testable")
