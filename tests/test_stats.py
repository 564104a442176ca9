"""xp.stats against hand computations and the scipy/statsmodels references."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
from scipy import stats as sps

from xp import stats

A5 = np.array([1.0, 2.0, 3.0, 4.0, 10.0])


@pytest.fixture
def no_warnings():
    """Turn every warning into an error for the duration of a test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def welch_by_hand(a, b, confidence=0.95):
    """Welch-Satterthwaite df and the two-sided CI of mean(a) - mean(b), from the formulas."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    diff = a.mean() - b.mean()
    half = sps.t.ppf((1 + confidence) / 2, df) * se
    return df, diff - half, diff + half


# --------------------------------------------------------------------------------------------
# describe / t_interval / bootstrap


def test_describe_matches_hand_values():
    d = stats.describe(A5)
    assert d["n"] == 5
    assert d["mean"] == pytest.approx(4.0)
    assert d["var"] == pytest.approx(12.5)  # squared deviations 9+4+1+0+36 = 50, / 4
    assert d["std"] == pytest.approx(math.sqrt(12.5))
    assert d["sem"] == pytest.approx(math.sqrt(12.5 / 5))
    assert d["median"] == 3.0
    assert d["iqm"] == pytest.approx(3.0)  # mean of the middle 50%: (2 + 3 + 4) / 3
    assert d["iqm"] == pytest.approx(sps.trim_mean(A5, 0.25))
    assert (d["min"], d["max"]) == (1.0, 10.0)


def test_describe_iqm_of_eight_drops_two_each_side():
    x = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 100.0]
    assert stats.describe(x)["iqm"] == pytest.approx(3.5)  # mean of 2, 3, 4, 5


def test_describe_single_score_has_nan_spread(no_warnings):
    d = stats.describe([0.7])
    assert d["n"] == 1 and d["mean"] == 0.7 and d["iqm"] == 0.7
    assert math.isnan(d["std"]) and math.isnan(d["var"]) and math.isnan(d["sem"])


def test_t_interval_matches_formula_and_scipy():
    low, high = stats.t_interval(A5)
    half = sps.t.ppf(0.975, 4) * math.sqrt(12.5) / math.sqrt(5)
    assert (low, high) == pytest.approx((4.0 - half, 4.0 + half))
    ref = sps.t.interval(0.9, 4, loc=4.0, scale=sps.sem(A5))
    assert stats.t_interval(A5, confidence=0.9) == pytest.approx(ref)


def test_t_interval_of_equal_scores_has_zero_width(no_warnings):
    assert stats.t_interval([0.3, 0.3, 0.3]) == pytest.approx((0.3, 0.3))


def test_bootstrap_is_reproducible_and_uses_the_rng():
    x = np.array([0.81, 0.84, 0.79, 0.86, 0.83, 0.80])
    first = stats.bootstrap_interval(x, method="percentile", n_resamples=2000, rng=1)
    again = stats.bootstrap_interval(x, method="percentile", n_resamples=2000, rng=1)
    other = stats.bootstrap_interval(x, method="percentile", n_resamples=2000, rng=2)
    assert (first["low"], first["high"]) == (again["low"], again["high"])
    assert (first["low"], first["high"]) != (other["low"], other["high"])
    via_gen = stats.bootstrap_interval(
        x, method="percentile", n_resamples=2000, rng=np.random.default_rng(1)
    )
    assert (via_gen["low"], via_gen["high"]) == (first["low"], first["high"])
    assert first["low"] < x.mean() < first["high"]


def test_bootstrap_bca_equals_scipy_with_the_same_seed():
    x = np.array([0.81, 0.84, 0.79, 0.86, 0.83, 0.80, 0.9, 0.77, 0.85, 0.82, 0.88])
    ours = stats.bootstrap_interval(x, confidence=0.9, rng=7)
    ref = sps.bootstrap(
        (x,), np.mean, n_resamples=10_000, confidence_level=0.9, method="BCa",
        rng=np.random.default_rng(7),
    ).confidence_interval  # fmt: skip
    assert (ours["low"], ours["high"]) == (ref.low, ref.high)
    assert ours["method"] == "bca"
    assert ours["reliable"] is True and ours["note"] is None


def test_bootstrap_flags_few_seeds_as_unreliable():
    r = stats.bootstrap_interval([0.8, 0.82, 0.85], n_resamples=500, rng=0)
    assert r["reliable"] is False
    assert "under-cover" in r["note"] and "10" in r["note"]


@pytest.mark.parametrize("method", ["bca", "percentile"])
def test_bootstrap_of_equal_scores_returns_the_value_without_warnings(no_warnings, method):
    r = stats.bootstrap_interval([0.5, 0.5, 0.5, 0.5], method=method, rng=0)
    assert r["low"] == r["high"] == 0.5
    assert "equal" in r["note"]


# --------------------------------------------------------------------------------------------
# welch / mann-whitney / holm / prob_improvement

WA = np.array([0.91, 0.88, 0.93, 0.90, 0.95])
WB = np.array([0.86, 0.90, 0.84, 0.89])


@pytest.mark.parametrize("alternative", ["greater", "less", "two-sided"])
def test_welch_matches_scipy_and_hand_formulas(alternative):
    r = stats.welch_test(WA, WB, alternative=alternative)
    ref = sps.ttest_ind(WA, WB, equal_var=False, alternative=alternative)
    assert r["p_value"] == pytest.approx(ref.pvalue, rel=1e-12)
    assert r["statistic"] == pytest.approx(ref.statistic, rel=1e-12)
    df, low, high = welch_by_hand(WA, WB)
    assert r["df"] == pytest.approx(df, rel=1e-12)
    assert r["diff"] == pytest.approx(WA.mean() - WB.mean())
    # the interval is the two-sided 95% one whatever the alternative
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((low, high), rel=1e-12)
    assert r["se"] == pytest.approx(math.sqrt(WA.var(ddof=1) / 5 + WB.var(ddof=1) / 4))
    assert r["alternative"] == alternative and r["degenerate"] is False


def test_welch_ci_level_is_configurable():
    r = stats.welch_test(WA, WB, confidence=0.8)
    _, low, high = welch_by_hand(WA, WB, confidence=0.8)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((low, high), rel=1e-12)


def test_welch_with_no_variance_in_either_arm_follows_the_documented_rule(no_warnings):
    up = stats.welch_test([0.9, 0.9, 0.9], [0.8, 0.8], alternative="greater")
    assert up["p_value"] == 0.0 and up["degenerate"] and up["statistic"] == math.inf
    assert up["ci_low"] == up["ci_high"] == pytest.approx(0.1)
    assert stats.welch_test([0.9, 0.9], [0.8, 0.8], alternative="less")["p_value"] == 1.0
    assert stats.welch_test([0.9, 0.9], [0.8, 0.8], alternative="two-sided")["p_value"] == 0.0
    for alt in ("greater", "less", "two-sided"):
        same = stats.welch_test([0.5, 0.5], [0.5, 0.5, 0.5], alternative=alt)
        assert same["p_value"] == 1.0 and math.isnan(same["statistic"])


def test_welch_with_one_constant_arm_is_an_ordinary_test(no_warnings):
    r = stats.welch_test([0.1, 0.1, 0.1], [0.2, 0.3, 0.25], alternative="less")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = sps.ttest_ind([0.1, 0.1, 0.1], [0.2, 0.3, 0.25], equal_var=False, alternative="less")
    assert r["p_value"] == pytest.approx(ref.pvalue) and r["df"] == pytest.approx(2.0)


@pytest.mark.parametrize("alternative", ["greater", "less", "two-sided"])
def test_mann_whitney_matches_scipy_without_ties(alternative):
    a, b = [0.91, 0.88, 0.93, 0.90, 0.95], [0.86, 0.905, 0.84, 0.89]
    r = stats.mann_whitney(a, b, alternative=alternative)
    ref = sps.mannwhitneyu(a, b, alternative=alternative, method="exact")
    assert (r["statistic"], r["p_value"]) == (ref.statistic, ref.pvalue)
    assert r["method"] == "exact"
    assert r["min_p"] == stats.min_rank_p(5, 4, alternative)


def test_mann_whitney_with_ties_is_exact_by_enumeration():
    a, b = [3.0, 4.0, 5.0, 5.0], [1.0, 2.0, 3.0, 5.0]
    r = stats.mann_whitney(a, b)
    ref = sps.mannwhitneyu(a, b, alternative="greater", method=sps.PermutationMethod(np.inf))
    assert r["p_value"] == pytest.approx(ref.pvalue) and r["method"] == "exact"


def test_mann_whitney_large_tied_samples_use_the_normal_approximation():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 12).astype(float), rng.integers(0, 5, 12).astype(float)
    r = stats.mann_whitney(a, b, alternative="two-sided")
    ref = sps.mannwhitneyu(a, b, alternative="two-sided", method="asymptotic")
    assert r["p_value"] == pytest.approx(ref.pvalue) and r["method"] == "asymptotic"


def test_three_vs_three_seeds_can_never_beat_p_005():
    assert stats.min_rank_p(3, 3, "greater") == 1 / 20
    assert stats.min_rank_p(3, 3, "two-sided") == 2 / 20
    assert stats.min_rank_p(1, 1, "two-sided") == 1.0
    r = stats.mann_whitney([0.90, 0.91, 0.92], [0.80, 0.81, 0.82])
    assert r["p_value"] == 0.05 and r["min_p"] == 0.05 and r["method"] == "exact"
    assert r["statistic"] == 9.0


def test_holm_matches_hand_worked_example():
    r = stats.holm([0.01, 0.04, 0.03], alpha=0.05)
    # sorted: 0.01 * 3 = 0.03, 0.03 * 2 = 0.06, 0.04 * 1 -> max(0.04, 0.06) = 0.06
    assert r["p_adjusted"] == pytest.approx([0.03, 0.06, 0.06])
    assert r["reject"] == [True, False, False]
    assert all(type(v) is bool for v in r["reject"])


def test_prob_improvement():
    assert stats.prob_improvement([3, 4, 5], [0, 1, 2]) == 1.0
    assert stats.prob_improvement([0, 1, 2], [3, 4, 5]) == 0.0
    assert stats.prob_improvement([1, 2, 3], [1, 2, 3]) == 0.5
    # pairs of [1, 2, 3] vs [2, 0]: 1:(0, 1), 2:(1/2, 1), 3:(1, 1) -> 4.5 / 6
    assert stats.prob_improvement([1, 2, 3], [2, 0]) == 0.75
    u = sps.mannwhitneyu([1, 2, 3], [2, 0]).statistic
    assert stats.prob_improvement([1, 2, 3], [2, 0]) == u / 6


# --------------------------------------------------------------------------------------------
# power


def test_seeds_needed_classic_answer_and_properties(no_warnings):
    assert stats.seeds_needed(1.0, 1.0, alpha=0.05, power=0.8, alternative="two-sided") == 17
    one_sided = stats.seeds_needed(1.0, 1.0)
    assert one_sided == 14 and one_sided < 17
    ns = [stats.seeds_needed(d, 1.0) for d in (0.3, 0.5, 1.0, 2.0)]
    assert ns == sorted(ns, reverse=True) and len(set(ns)) == 4
    for diff, std in [(1.0, 1.0), (0.02, 0.015), (0.3, 1.0)]:
        n = stats.seeds_needed(diff, std)
        assert stats.power_of(n, diff, std) >= 0.8 > stats.power_of(n - 1, diff, std)


def test_seeds_needed_edges(no_warnings):
    assert stats.seeds_needed(0.1, 0.0) == 2  # no noise: two seeds show it
    assert stats.seeds_needed(10.0, 1.0) == 2  # solver would not converge; power(2) is enough
    assert stats.seeds_needed(3.0, 1.0) == 3
    with pytest.raises(ValueError, match="diff"):
        stats.seeds_needed(0.0, 1.0)
    with pytest.raises(ValueError, match="diff"):
        stats.seeds_needed(-0.1, 1.0)
    with pytest.raises(ValueError, match="std"):
        stats.seeds_needed(0.1, -1.0)
    with pytest.raises(ValueError, match="power"):
        stats.seeds_needed(0.1, 1.0, power=1.0)


def test_power_of_matches_statsmodels():
    from statsmodels.stats.power import TTestIndPower

    ref = TTestIndPower().power(effect_size=0.5, nobs1=10, alpha=0.05, alternative="two-sided")
    assert stats.power_of(10, 0.5, 1.0, alternative="two-sided") == pytest.approx(ref)
    assert stats.power_of(5, 0.1, 0.0) == 1.0 and stats.power_of(5, 0.0, 0.0) == 0.0


# --------------------------------------------------------------------------------------------
# expected_max


def brute_expected_max(x, k):
    """Average of max over every ordered k-tuple drawn with replacement."""
    return np.mean([max(t) for t in itertools.product(x, repeat=k)])


def test_expected_max_hand_and_brute_force():
    e = stats.expected_max([1.0, 2.0, 3.0])
    assert e.shape == (3,)
    assert e[0] == pytest.approx(2.0)
    assert e[1] == pytest.approx(22 / 9)  # 1 * 1/9 + 2 * 3/9 + 3 * 5/9
    x = [0.3, 0.9, 0.5, 0.5, 0.7]
    for k, value in enumerate(stats.expected_max(x, n_trials=4), start=1):
        assert value == pytest.approx(brute_expected_max(x, k))


def test_expected_max_is_monotone_and_tends_to_the_max():
    x = np.random.default_rng(3).normal(0.8, 0.05, 7)
    e = stats.expected_max(x, n_trials=500)
    assert e[0] == pytest.approx(x.mean())
    assert np.all(np.diff(e) >= 0) and np.all(e <= x.max())
    assert e[-1] == pytest.approx(x.max(), abs=1e-12)


def test_unbiased_expected_max_matches_hand_values_and_every_subset():
    # k = 2 of [1, 2, 3, 4]: the 6 pairs' maxima are 2, 3, 4, 3, 4, 4 -> 20/6; k = 3: 3, 4, 4, 4
    e = stats.expected_max_unbiased([4.0, 1.0, 3.0, 2.0])
    assert e == pytest.approx([2.5, 20 / 6, 15 / 4, 4.0])
    assert stats.expected_max_unbiased([4.0, 1.0, 3.0, 2.0], higher_is_better=False) == (
        pytest.approx([2.5, 10 / 6, 5 / 4, 1.0])  # minima of the pairs: 1, 1, 1, 2, 2, 3
    )
    x = np.random.default_rng(5).normal(0.8, 0.05, 9)
    x[3] = x[6]  # a tie
    for k, value in enumerate(stats.expected_max_unbiased(x), start=1):
        every = [max(c) for c in itertools.combinations(x, k)]
        assert value == pytest.approx(np.mean(every), rel=1e-12)
    # it differs from the with-replacement curve, which is biased low as k nears N
    assert stats.expected_max_unbiased(x)[5] > stats.expected_max(x)[5]


def test_expected_max_band_brackets_the_curve():
    x = np.random.default_rng(8).normal(0.7, 0.1, 12)
    low, high = stats.expected_max_band(x, rng=1)
    curve = stats.expected_max_unbiased(x)
    assert low.shape == high.shape == curve.shape == (12,)
    assert np.all(low <= curve + 1e-12) and np.all(curve <= high + 1e-12)
    assert high[-1] == pytest.approx(x.max()) and np.all(high - low > 0)
    same = stats.expected_max_band([0.5])
    assert same[0] == pytest.approx([0.5]) and same[1] == pytest.approx([0.5])


def test_expected_max_lower_is_better_gives_expected_min():
    e = stats.expected_max([1.0, 2.0, 3.0], n_trials=2, higher_is_better=False)
    assert e == pytest.approx([2.0, 14 / 9])  # min of two: P(1)=5/9, P(2)=3/9, P(3)=1/9
    assert np.all(np.diff(stats.expected_max([3.0, 1.0, 2.0], 50, higher_is_better=False)) <= 0)


# --------------------------------------------------------------------------------------------
# compare / verdict

GOOD = np.array([0.90, 0.91, 0.89, 0.905, 0.895])
BASE = np.array([0.80, 0.81, 0.79, 0.805, 0.795])


def test_clearly_better_holds():
    cmp = stats.compare(GOOD, BASE, rng=0)
    assert stats.verdict(cmp) == "holds"
    assert cmp["diff"] == pytest.approx(0.1)
    assert cmp["welch"]["alternative"] == "greater" and cmp["welch"]["p_value"] < 1e-6
    assert cmp["mann_whitney"]["p_value"] == pytest.approx(1 / 252)
    assert cmp["prob_improvement"] == 1.0
    assert cmp["diff_ci95_low"] < cmp["verdict_ci_low"] < 0.1 < cmp["verdict_ci_high"]
    assert cmp["verdict_ci_level"] == pytest.approx(0.9)
    assert cmp["seeds_needed"] == 2
    assert cmp["diff_bootstrap"]["reliable"] is False


def test_clearly_worse_does_not_hold():
    cmp = stats.compare(BASE, GOOD, rng=0)
    assert stats.verdict(cmp) == "does_not_hold"
    assert cmp["diff"] < 0 and cmp["welch_worse"]["p_value"] < 0.05
    assert cmp["prob_improvement"] == 0.0


def test_overlapping_three_seeds_are_inconclusive():
    cmp = stats.compare([0.82, 0.86, 0.80], [0.81, 0.84, 0.80], rng=0)
    assert stats.verdict(cmp) == "inconclusive"
    assert isinstance(cmp["seeds_needed"], int) and cmp["seeds_needed"] > 3
    assert cmp["mann_whitney"]["min_p"] == 0.05


def test_min_effect_larger_than_the_difference_does_not_hold():
    cmp = stats.compare(GOOD, BASE, min_effect=0.2, rng=0)
    assert stats.verdict(cmp) == "does_not_hold"  # the whole interval lies below 0.2
    assert stats.verdict(cmp, min_effect=0.0) == "holds"
    # an interval straddling min_effect: significant but not by enough -> inconclusive
    assert stats.verdict(cmp, min_effect=0.1) == "inconclusive"


def test_lower_is_better_metric_direction():
    rmse_new = BASE - 0.3  # 0.49..0.51: lower error
    rmse_old = GOOD - 0.3
    cmp = stats.compare(rmse_new, rmse_old, higher_is_better=False, rng=0)
    assert stats.verdict(cmp) == "holds"
    assert cmp["diff"] == pytest.approx(0.1)  # positive: the candidate improves
    assert cmp["diff_ci95_low"] > 0 and cmp["diff_bootstrap"]["low"] > 0
    assert cmp["welch"]["alternative"] == "less" and cmp["welch"]["diff"] == pytest.approx(-0.1)
    assert cmp["mann_whitney"]["alternative"] == "less"
    assert cmp["prob_improvement"] == 1.0
    reverse = stats.compare(rmse_old, rmse_new, higher_is_better=False, rng=0)
    assert stats.verdict(reverse) == "does_not_hold"


def test_verdict_interval_agrees_with_the_one_sided_test():
    rng = np.random.default_rng(11)
    for _ in range(40):
        a, b = rng.normal(0.02, 0.03, 4), rng.normal(0.0, 0.03, 4)
        cmp = stats.compare(a, b, rng=0)
        assert (cmp["welch"]["p_value"] < 0.05) == (cmp["verdict_ci_low"] > 0)
        assert (stats.verdict(cmp) == "holds") == (cmp["welch"]["p_value"] < 0.05)


def test_verdict_uses_compare_settings_unless_overridden():
    a, b = [0.84, 0.86, 0.85, 0.88], [0.82, 0.85, 0.83, 0.84]
    strict = stats.compare(a, b, alpha=0.01, rng=0)
    assert 0.01 < strict["welch"]["p_value"] < 0.05
    assert stats.verdict(strict) == "inconclusive"
    assert stats.verdict(strict, alpha=0.05) == "holds"


def test_compare_is_reproducible_and_handles_constant_arms(no_warnings):
    assert stats.compare(GOOD, BASE, rng=5) == stats.compare(GOOD, BASE, rng=5)
    cmp = stats.compare([0.9, 0.9, 0.9], [0.8, 0.8, 0.8], rng=0)
    assert stats.verdict(cmp) == "holds" and cmp["seeds_needed"] is None
    tie = stats.compare([0.9, 0.9, 0.9], [0.9, 0.9, 0.9], rng=0)
    assert stats.verdict(tie) == "inconclusive" and tie["diff"] == 0.0


# --------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: stats.describe([]), "empty"),
        (lambda: stats.describe([0.1, float("nan")]), "NaN"),
        (lambda: stats.describe([[0.1, 0.2]]), "1-D"),
        (lambda: stats.t_interval([0.5]), "at least 2"),
        (lambda: stats.t_interval(A5, confidence=1.5), "confidence"),
        (lambda: stats.bootstrap_interval(A5, method="basic"), "method"),
        (lambda: stats.welch_test([0.1], [0.2, 0.3]), "at least 2"),
        (lambda: stats.welch_test(A5, A5, alternative="bigger"), "alternative"),
        (lambda: stats.mann_whitney([], A5), "empty"),
        (lambda: stats.holm([0.01, 1.2]), r"\[0, 1\]"),
        (lambda: stats.holm([0.01], alpha=1.0), "alpha"),
        (lambda: stats.holm([0.01], alpha=0.0), "alpha"),
        (lambda: stats.min_rank_p(0, 3), "n_a"),
        (lambda: stats.power_of(1, 0.1, 1.0), "n must"),
        (lambda: stats.expected_max(A5, n_trials=0), "n_trials"),
        (lambda: stats.compare(A5, [np.nan, 1.0]), "b contains NaN"),
        (lambda: stats.compare(A5, A5, alpha=0.6), "alpha"),
        (lambda: stats.verdict({"diff": 0.1}), "compare"),
    ],
)
def test_bad_input_raises_value_error_naming_the_problem(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_import_pulls_in_neither_torch_nor_mlflow():
    code = "import sys, xp.stats; print(any(m in sys.modules for m in ('torch', 'mlflow')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- equivalence (TOST) -------------------------------------------------------------------------
def test_tost_matches_two_one_sided_welch_tests_by_hand():
    from scipy import stats as st

    from xp.stats import tost

    a, b = [0.80, 0.82, 0.81, 0.83, 0.79], [0.805, 0.815, 0.82, 0.81, 0.80]
    r = tost(a, b, margin=0.02)
    b_ = np.asarray(b)
    low = st.ttest_ind(b_ + 0.02, a, equal_var=False, alternative="greater").pvalue
    high = st.ttest_ind(b_ - 0.02, a, equal_var=False, alternative="less").pvalue
    assert r["p_lower"] == pytest.approx(low) and r["p_upper"] == pytest.approx(high)
    assert r["p_value"] == pytest.approx(max(low, high))
    assert r["diff"] == pytest.approx(np.mean(b) - np.mean(a))
    # the 90% Welch interval of the difference, from its parts
    va, vb = np.var(a, ddof=1) / 5, np.var(b, ddof=1) / 5
    df = (va + vb) ** 2 / (va**2 / 4 + vb**2 / 4)
    half = st.t.ppf(0.95, df) * np.sqrt(va + vb)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((r["diff"] - half, r["diff"] + half))
    assert r["verdict"] == "equivalent" and -0.02 < r["ci_low"] and r["ci_high"] < 0.02


def test_tost_verdicts_not_equivalent_and_inconclusive_with_seeds_needed():
    from xp.stats import tost

    far = tost([0.80, 0.81, 0.79], [0.90, 0.91, 0.89], margin=0.01)
    assert far["verdict"] == "not equivalent" and far["ci_low"] >= 0.01
    assert far["seeds_needed"] is None
    noisy = tost([0.70, 0.90, 0.80], [0.75, 0.85, 0.80], margin=0.05)
    assert noisy["verdict"] == "inconclusive"
    assert noisy["seeds_needed"] > 3
    more = np.random.default_rng(0)
    big_a, big_b = more.normal(0.8, 0.1, 200), more.normal(0.8, 0.1, 200)
    assert tost(big_a, big_b, margin=0.05)["verdict"] == "equivalent"  # enough seeds settle it
    same = tost([0.8, 0.8], [0.8, 0.8], margin=0.01)  # no spread at all: bit-identical re-runs
    assert same["verdict"] == "equivalent" and same["p_value"] == 0.0
    with pytest.raises(ValueError, match="margin must be > 0"):
        tost([0.8, 0.9], [0.8, 0.9], margin=0)


def test_tost_bound_is_the_smallest_margin_that_passes():
    from xp.stats import tost

    rng = np.random.default_rng(7)
    for n_a, n_b, shift in [(5, 5, 0.0), (3, 7, 0.03), (10, 4, -0.05), (6, 6, 0.2)]:
        a, b = rng.normal(0.8, 0.05, n_a), rng.normal(0.8 + shift, 0.05, n_b)
        r = tost(a, b, margin=0.01)
        assert r["bound"] == pytest.approx(max(abs(r["ci_low"]), abs(r["ci_high"])))
        assert tost(a, b, margin=r["bound"] * (1 + 1e-6))["verdict"] == "equivalent"
        assert tost(a, b, margin=r["bound"] * (1 - 1e-6))["verdict"] != "equivalent"
        assert tost(a, b, margin=r["bound"])["verdict"] != "equivalent"  # inside, not on it
    same = tost([0.8, 0.8], [0.9, 0.9], margin=0.2)  # no spread: the difference itself
    assert same["bound"] == pytest.approx(0.1) and same["verdict"] == "equivalent"


def _tost_equivalent(a: np.ndarray, b: np.ndarray, margin: np.ndarray) -> np.ndarray:
    """TOST's verdict per row, from scipy's one-sided Welch tests (the reference, vectorised)."""
    m = margin[:, None]
    low = sps.ttest_ind(b + m, a, axis=1, equal_var=False, alternative="greater").pvalue
    high = sps.ttest_ind(b - m, a, axis=1, equal_var=False, alternative="less").pvalue
    return (low < 0.05) & (high < 0.05)


@pytest.mark.parametrize("n", [5, 10])
def test_resolvable_margin_passes_a_perfect_reproduction_and_catches_a_shift_of_itself(n):
    """The default margin of a reproduction: on the same normal distribution twice, TOST says
    `equivalent` 80% of the time; with the re-run shifted by the margin, at most alpha (5%)."""
    rng = np.random.default_rng(2024 + n)
    a, b = rng.normal(0.8, 0.08, (20_000, n)), rng.normal(0.8, 0.08, (20_000, n))
    factor = stats.resolvable_margin(a[0], n) / np.std(a[0], ddof=1)
    margin = factor * a.std(axis=1, ddof=1)  # every draw's own margin, from its own original
    assert np.mean(_tost_equivalent(a, b, margin)) == pytest.approx(0.8, abs=0.01)
    assert np.mean(_tost_equivalent(a, b + margin[:, None], margin)) <= 0.05
    assert np.mean(_tost_equivalent(a, b, 0.5 * a.std(axis=1, ddof=1))) < 0.01  # the old default
    known_sd = (sps.t.ppf(0.95, 2 * n - 2) + sps.t.ppf(0.9, 2 * n - 2)) * np.sqrt(2 / n)
    assert known_sd < factor  # the textbook margin forgets that the original's sd is estimated
    # xp's own tost agrees with the reference, draw by draw
    ours = [stats.tost(a[i], b[i], margin[i])["verdict"] == "equivalent" for i in range(200)]
    assert ours == list(_tost_equivalent(a[:200], b[:200], margin[:200]))


def test_resolvable_margin_scales_with_the_original_sd_only():
    x = np.array([0.61, 0.55, 0.43, 0.58, 0.47])
    m = stats.resolvable_margin(x, 5)
    assert m / np.std(x, ddof=1) == pytest.approx(2.47, abs=0.01)
    assert stats.resolvable_margin(2 * x + 7, 5) == pytest.approx(2 * m)  # sd units, not level
    assert stats.resolvable_margin(x, 10) < m < stats.resolvable_margin(x, 3)  # more seeds, less
    assert stats.resolvable_margin(x, 5, power=0.9) > m
    assert stats.resolvable_margin([0.8, 0.8, 0.8], 3) == 0.0
    with pytest.raises(ValueError, match="n_b"):
        stats.resolvable_margin(x, 1)
    with pytest.raises(ValueError, match="power"):
        stats.resolvable_margin(x, 5, power=1.0)
