"""Two configurations: Welch and rank tests, Holm, P(improvement)."""

from __future__ import annotations

import gc
import math
import warnings
from typing import Any

import numpy as np
from scipy import stats as sps

from xp.stats._checks import (
    ArrayLike,
    _check_alpha,
    _check_alternative,
    _check_confidence,
    _check_count,
    _is_constant,
    _scores,
    _var,
)

# Exact enumeration of rank-test permutations with ties: C(8 + 8, 8) = 12870 takes ~0.1 s,
# beyond that the tie-corrected normal approximation is both cheap and adequate.
_MAX_EXACT_PARTITIONS = 20_000


def _degenerate_p(diff: float, alternative: str) -> float:
    """p-value when neither arm varies: certain if the difference points the tested way."""
    if alternative == "greater":
        return 0.0 if diff > 0 else 1.0
    if alternative == "less":
        return 0.0 if diff < 0 else 1.0
    return 0.0 if diff != 0 else 1.0


def welch_test(
    a: ArrayLike, b: ArrayLike, alternative: str = "greater", confidence: float = 0.95
) -> dict[str, Any]:
    """Welch's t-test of mean(a) against mean(b) (scipy.stats.ttest_ind, equal_var=False).

    The confidence interval is always the two-sided `confidence` interval of mean(a) - mean(b)
    with the Welch-Satterthwaite df, also for a one-sided `alternative` (a one-sided interval
    has an infinite end, which is useless for display).

    Zero variance in both arms (every seed gave the same score in each arm) is decided, not
    computed: the difference is then known exactly, so p = 0.0 when it points the way
    `alternative` asks (for "two-sided": when it is non-zero) and p = 1.0 otherwise, including
    when the two means are equal. The statistic is then +-inf (NaN for equal means), df is NaN,
    se is 0, the CI is (diff, diff), and "degenerate" is True. Zero variance in one arm only is an
    ordinary Welch test.

    Args:
        a: per-seed scores of the first arm (candidate), at least 2.
        b: per-seed scores of the second arm (baseline), at least 2.
        alternative: "greater" (mean(a) > mean(b)), "less", or "two-sided".
        confidence: level of the two-sided CI of the difference.

    Returns:
        {"statistic", "df", "p_value", "alternative", "diff" (mean(a) - mean(b)),
        "se" (standard error of diff), "ci_low", "ci_high", "confidence", "degenerate"}.

    Raises:
        ValueError: an arm with fewer than 2 scores or NaN/inf, bad alternative or confidence.
    """
    x = _scores(a, "a", min_n=2)
    y = _scores(b, "b", min_n=2)
    _check_alternative(alternative)
    confidence = _check_confidence(confidence)
    diff = float(np.mean(x) - np.mean(y))
    if _is_constant(x) and _is_constant(y):
        return {
            "statistic": math.copysign(math.inf, diff) if diff != 0 else math.nan,
            "df": math.nan,
            "p_value": _degenerate_p(diff, alternative),
            "alternative": alternative,
            "diff": diff,
            "se": 0.0,
            "ci_low": diff,
            "ci_high": diff,
            "confidence": confidence,
            "degenerate": True,
        }
    with warnings.catch_warnings():
        # One all-equal arm makes scipy warn about "precision loss" in its variance: its
        # variance is truly zero, and the other arm carries the test, so the result is sound.
        warnings.filterwarnings("ignore", message="Precision loss", category=RuntimeWarning)
        res = sps.ttest_ind(x, y, equal_var=False, alternative=alternative)
        two_sided = sps.ttest_ind(x, y, equal_var=False, alternative="two-sided")
    ci = two_sided.confidence_interval(confidence)
    se = math.sqrt(_var(x) / x.size + _var(y) / y.size)
    return {
        "statistic": float(res.statistic),
        "df": float(res.df),
        "p_value": float(res.pvalue),
        "alternative": alternative,
        "diff": diff,
        "se": se,
        "ci_low": float(ci.low),
        "ci_high": float(ci.high),
        "confidence": confidence,
        "degenerate": False,
    }


def min_rank_p(n_a: int, n_b: int, alternative: str = "greater") -> float:
    """Smallest p-value an exact rank test can reach with n_a vs n_b seeds.

    The most extreme arrangement (complete separation) is one of C(n_a + n_b, n_a) equally
    likely ones under the null, so one-sided p >= 1 / C(n_a + n_b, n_a) and two-sided p >= 2 / C
    (capped at 1). With 3 vs 3 seeds that is 0.05: a rank test can never give p < 0.05.

    Args:
        n_a: number of seeds in the first arm, >= 1.
        n_b: number of seeds in the second arm, >= 1.
        alternative: "greater", "less" or "two-sided".

    Returns:
        The floor on the p-value.

    Raises:
        ValueError: a count below 1 or a bad alternative.
    """
    n_a = _check_count(n_a, "n_a", 1)
    n_b = _check_count(n_b, "n_b", 1)
    _check_alternative(alternative)
    sides = 2 if alternative == "two-sided" else 1
    return min(1.0, sides / math.comb(n_a + n_b, n_a))


def mann_whitney(a: ArrayLike, b: ArrayLike, alternative: str = "greater") -> dict[str, Any]:
    """Mann-Whitney U (Wilcoxon rank-sum) test of a against b (scipy.stats.mannwhitneyu).

    Exact whenever that is cheap: without ties scipy's exact null distribution (when an arm has
    <= 8 seeds), with ties an exact enumeration of all splits of the pooled scores (conditional on
    the ties, via `scipy.stats.PermutationMethod`) when there are at most 20,000 of them;
    otherwise the tie-corrected normal approximation. All of it is deterministic.

    Args:
        a: per-seed scores of the first arm.
        b: per-seed scores of the second arm.
        alternative: "greater" (a tends to be larger), "less", or "two-sided".

    Returns:
        {"statistic" (U of a), "p_value", "alternative", "min_p" (see `min_rank_p`),
        "method" ("exact" or "asymptotic")}.

    Raises:
        ValueError: an empty arm, NaN/inf, or a bad alternative.
    """
    x = _scores(a, "a")
    y = _scores(b, "b")
    _check_alternative(alternative)
    has_ties = np.unique(np.concatenate([x, y])).size < x.size + y.size
    if not has_ties and min(x.size, y.size) <= 8:
        method, label = "exact", "exact"
    elif has_ties and math.comb(x.size + y.size, x.size) <= _MAX_EXACT_PARTITIONS:
        # n_resamples=inf makes scipy enumerate every split: exact and RNG-free.
        method, label = sps.PermutationMethod(n_resamples=np.inf), "exact"
    else:
        method, label = "asymptotic", "asymptotic"
    with warnings.catch_warnings():
        # All scores equal gives a zero-variance normal approximation; its NaN p is replaced.
        warnings.simplefilter("ignore", RuntimeWarning)
        res = sps.mannwhitneyu(x, y, alternative=alternative, method=method)
    p = float(res.pvalue)
    if math.isnan(p):
        p = 1.0  # every score tied: no evidence either way
    return {
        "statistic": float(res.statistic),
        "p_value": p,
        "alternative": alternative,
        "min_p": min_rank_p(x.size, y.size, alternative),
        "method": label,
    }


def holm(p_values: ArrayLike, alpha: float = 0.05) -> dict[str, Any]:
    """Holm step-down correction for several tests (statsmodels multipletests, method="holm").

    Controls the family-wise error rate (the chance of at least one false rejection) at alpha,
    for any dependence between the tests.

    Args:
        p_values: the family's p-values, in [0, 1].
        alpha: family-wise error rate.

    Returns:
        {"reject": [bool, ...], "p_adjusted": [float, ...]}, in the order given.

    Raises:
        ValueError: empty, NaN, a p-value outside [0, 1], or alpha outside (0, 1).
    """
    from statsmodels.stats.multitest import multipletests

    p = _scores(p_values, "p_values")
    if ((p < 0) | (p > 1)).any():
        raise ValueError(f"p_values must lie in [0, 1], got {p.tolist()}")
    alpha = _check_alpha(alpha)
    # statsmodels' Holm ends with a full gc.collect(): over the heap of a process holding
    # 10,000 runs that is seconds (xp compare); objects frozen first are not walked
    gc.freeze()
    try:
        reject, adjusted, _, _ = multipletests(p, alpha=alpha, method="holm")
    finally:
        gc.unfreeze()
    return {"reject": [bool(r) for r in reject], "p_adjusted": [float(q) for q in adjusted]}


def prob_improvement(a: ArrayLike, b: ArrayLike) -> float:
    """P(A > B): the chance a random seed of A beats a random seed of B, ties counting 1/2.

    rliable's "probability of improvement"; equals the Mann-Whitney U of a divided by
    n_a * n_b. Computed from all n_a * n_b pairs directly (exact, no ranking).

    Args:
        a: per-seed scores of A.
        b: per-seed scores of B.

    Returns:
        A number in [0, 1]; 0.5 means no tendency either way.

    Raises:
        ValueError: an empty arm or NaN/inf.
    """
    x = _scores(a, "a")
    y = _scores(b, "b")
    greater = np.sum(x[:, None] > y[None, :])
    ties = np.sum(x[:, None] == y[None, :])
    return float((greater + 0.5 * ties) / (x.size * y.size))
