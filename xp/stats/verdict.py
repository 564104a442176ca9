"""Candidate vs baseline: every number a verdict needs, and the verdict."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats as sps

from xp.stats._checks import (
    ArrayLike,
    RngLike,
    _check_alpha,
    _check_finite,
    _scores,
    _var,
)
from xp.stats.one_arm import _bootstrap, _mean_diff
from xp.stats.planning import seeds_needed
from xp.stats.two_arms import mann_whitney, prob_improvement, welch_test


def _one_sided_bounds(diff: float, se: float, df: float, alpha: float) -> tuple[float, float]:
    """Two-sided (1 - 2 alpha) Welch interval: each end is a one-sided alpha-level bound."""
    if se == 0:
        return diff, diff
    half = float(sps.t.ppf(1 - alpha, df)) * se
    return diff - half, diff + half


def compare(
    a: ArrayLike,
    b: ArrayLike,
    higher_is_better: bool = True,
    alpha: float = 0.05,
    min_effect: float = 0.0,
    rng: RngLike = None,
) -> dict[str, Any]:
    """Everything a verdict needs on "candidate A vs baseline B", with the metric's direction.

    "Improvement" means larger for higher-is-better metrics and smaller otherwise; every
    top-level difference and interval is signed as an improvement (positive = A better), in the
    metric's units. The nested test dicts are on the raw scores, with the `alternative` they
    tested ("greater" for higher-is-better, "less" otherwise), so their own "diff" is
    mean(a) - mean(b).

    `seeds_needed` is a power analysis (one-sided two-sample t-test at `alpha`, power 0.8,
    pooled std of both arms) for the observed |diff|; it ignores `min_effect` and, being fed a
    noisy observed difference, is a planning hint rather than evidence.

    Args:
        a: per-seed scores of the candidate, at least 2.
        b: per-seed scores of the baseline, at least 2.
        higher_is_better: direction of the metric (False for loss, RMSE, ...).
        alpha: one-sided significance level in (0, 0.5).
        min_effect: smallest improvement that matters (metric units, improvement-signed);
            recorded for `verdict`.
        rng: Generator, seed or None, for the bootstrap interval of the improvement.

    Returns:
        {"n_a", "n_b", "mean_a", "mean_b", "higher_is_better", "alpha", "min_effect",
        "welch": Welch test in the improvement direction,
        "welch_worse": Welch test that the baseline is better,
        "mann_whitney": rank test in the improvement direction (with "min_p"),
        "prob_improvement": P(a seed of A beats a seed of B),
        "diff": improvement (mean difference), "diff_se", "df" (Welch),
        "diff_ci95_low", "diff_ci95_high": two-sided 95% Welch CI of the improvement (display),
        "verdict_ci_low", "verdict_ci_high", "verdict_ci_level": the (1 - 2 alpha) Welch CI
        that `verdict` checks against min_effect,
        "diff_bootstrap": BCa bootstrap interval of the improvement (see `bootstrap_interval`
        for the caveats; "reliable" needs >= 10 seeds per arm),
        "seeds_needed": int, or None when diff or the pooled std is 0}.

    Raises:
        ValueError: an arm with fewer than 2 scores or NaN/inf, alpha outside (0, 0.5), or a
            non-finite min_effect.
    """
    x = _scores(a, "a", min_n=2)
    y = _scores(b, "b", min_n=2)
    alpha = _check_alpha(alpha, upper=0.5)
    min_effect = _check_finite(min_effect, "min_effect")
    better = "greater" if higher_is_better else "less"
    worse = "less" if higher_is_better else "greater"
    sign = 1.0 if higher_is_better else -1.0

    welch = welch_test(x, y, alternative=better)
    welch_worse = welch_test(x, y, alternative=worse)
    # On improvement-signed scores the raw "less" interval becomes a "greater" one.
    diff = sign * welch["diff"]
    ci95_low, ci95_high = sorted((sign * welch["ci_low"], sign * welch["ci_high"]))
    verdict_low, verdict_high = _one_sided_bounds(diff, welch["se"], welch["df"], alpha)

    n_a, n_b = x.size, y.size
    pooled_std = math.sqrt(((n_a - 1) * _var(x) + (n_b - 1) * _var(y)) / (n_a + n_b - 2))
    needed = None
    if diff != 0 and pooled_std > 0:
        needed = seeds_needed(abs(diff), pooled_std, alpha=alpha, power=0.8, alternative="larger")

    return {
        "n_a": int(n_a),
        "n_b": int(n_b),
        "mean_a": float(np.mean(x)),
        "mean_b": float(np.mean(y)),
        "higher_is_better": bool(higher_is_better),
        "alpha": alpha,
        "min_effect": min_effect,
        "welch": welch,
        "welch_worse": welch_worse,
        "mann_whitney": mann_whitney(x, y, alternative=better),
        "prob_improvement": prob_improvement(sign * x, sign * y),
        "diff": diff,
        "diff_se": welch["se"],
        "df": welch["df"],
        "diff_ci95_low": ci95_low,
        "diff_ci95_high": ci95_high,
        "verdict_ci_low": verdict_low,
        "verdict_ci_high": verdict_high,
        "verdict_ci_level": 1 - 2 * alpha,
        "diff_bootstrap": _bootstrap((sign * x, sign * y), _mean_diff, 0.95, "bca", 10_000, rng),
        "seeds_needed": needed,
    }


def verdict(
    cmp: dict[str, Any], alpha: float | None = None, min_effect: float | None = None
) -> str:
    """Does the improvement hold? "holds", "does_not_hold" or "inconclusive".

    - "holds": the one-sided Welch test of improvement has p < alpha AND the (1 - 2 alpha)
      two-sided Welch interval of the improvement lies above min_effect (its low end >
      min_effect).
    - "does_not_hold": the baseline is significantly better (one-sided Welch p < alpha), or that
      interval lies wholly below min_effect (its high end < min_effect).
    - "inconclusive": otherwise; more seeds may settle it (see cmp["seeds_needed"]).

    Why (1 - 2 alpha), i.e. 90% for alpha = 0.05: each end of that interval is a one-sided
    alpha-level bound, so "low end > 0" is the same statement as "one-sided p < alpha" and, with
    min_effect = 0, the two conditions never disagree. Low end > min_effect is the one-sided test
    of "improvement > min_effect" at level alpha. The 95% interval in cmp is for display only.

    Args:
        cmp: the dict from `compare`.
        alpha: one-sided significance level in (0, 0.5); None uses the alpha given to
            `compare`.
        min_effect: smallest improvement that matters (improvement-signed, metric units);
            None uses the min_effect given to `compare`.

    Returns:
        "holds", "does_not_hold" or "inconclusive".

    Raises:
        ValueError: cmp is not a `compare` result, alpha outside (0, 0.5), non-finite min_effect.
    """
    test = cmp.get("test", "welch")  # (folds: the corrected resampled t-test, xp/stats/folds.py)
    missing = [k for k in (test, f"{test}_worse", "diff", "diff_se", "df") if k not in cmp]
    if missing:
        raise ValueError(f"cmp is not a compare() result: missing {missing}")
    alpha = _check_alpha(cmp.get("alpha", 0.05) if alpha is None else alpha, upper=0.5)
    min_effect = _check_finite(
        cmp.get("min_effect", 0.0) if min_effect is None else min_effect, "min_effect"
    )
    low, high = _one_sided_bounds(cmp["diff"], cmp["diff_se"], cmp["df"], alpha)
    if cmp[test]["p_value"] < alpha and low > min_effect:
        return "holds"
    if cmp[f"{test}_worse"]["p_value"] < alpha or high < min_effect:
        return "does_not_hold"
    return "inconclusive"


TEST_NAMES = {"welch": "one-sided Welch",
              "folds_and_seeds": "one-sided Welch over seeds and corrected resampled t over folds, "
                                 "the larger"}  # fmt: skip


def test_of(cmp: dict[str, Any]) -> tuple[str, float]:
    """The test a comparison's verdict rests on, as words, and its one-sided p-value."""
    test = cmp.get("test", "welch")
    return TEST_NAMES.get(test, test), float(cmp[test]["p_value"])
