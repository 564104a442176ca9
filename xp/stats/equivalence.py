"""Equivalence: does a re-run reproduce a result, within a margin, where bits cannot?

Two one-sided Welch tests (TOST, Schuirmann 1987) on `scores_b - scores_a`: the result is
`equivalent` when the (1 - 2 alpha) interval of the difference lies inside (-margin, +margin)
(equivalently, both one-sided tests reject at alpha), `not equivalent` when that interval lies
wholly outside, and `inconclusive` otherwise, with the seeds per arm that would settle it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from xp.stats._checks import ArrayLike, _check_alpha, _check_finite, _is_constant, _scores

EQUIVALENT, NOT_EQUIVALENT, INCONCLUSIVE = "equivalent", "not equivalent", "inconclusive"


def tost(
    scores_a: ArrayLike, scores_b: ArrayLike, margin: float, alpha: float = 0.05,
    power: float = 0.8,
) -> dict[str, Any]:  # fmt: skip
    """Test whether two seed distributions have means within `margin` of each other.

    Args:
        scores_a: per-seed scores of the original (shape `[n_a]`, n_a >= 2).
        scores_b: per-seed scores of the reproduction (shape `[n_b]`, n_b >= 2).
        margin: the largest difference of means that still counts as "the same result", in
            metric units (> 0).
        alpha: level of each one-sided test (0.05 gives a 90% interval).
        power: the power the seeds-needed figure is planned for.

    Returns:
        {"verdict", "diff" (mean_b - mean_a), "ci_low", "ci_high" (the 1 - 2 alpha interval),
        "p_value" (the larger of the two one-sided p-values), "p_lower", "p_upper", "margin",
        "alpha", "n_a", "n_b", "seeds_needed" (per arm, for an inconclusive verdict; None when
        the observed difference is itself outside the margin)}.

    Raises:
        ValueError: fewer than two scores per arm, a NaN, a margin <= 0, alpha outside (0, 0.5).
    """
    a, b = _scores(scores_a, "scores_a", 2), _scores(scores_b, "scores_b", 2)
    margin = _check_finite(margin, "margin")
    if margin <= 0:
        raise ValueError(f"margin must be > 0 (metric units), got {margin}")
    alpha = _check_alpha(alpha, 0.5)
    diff = float(b.mean() - a.mean())
    out: dict[str, Any] = {"diff": diff, "margin": margin, "alpha": alpha, "n_a": int(a.size),
                           "n_b": int(b.size), "seeds_needed": None}  # fmt: skip
    if _is_constant(a) and _is_constant(b):  # no spread: the difference is known exactly
        inside = abs(diff) < margin
        out.update(ci_low=diff, ci_high=diff, p_lower=0.0 if diff > -margin else 1.0,
                   p_upper=0.0 if diff < margin else 1.0,
                   verdict=EQUIVALENT if inside else NOT_EQUIVALENT)  # fmt: skip
        out["p_value"] = max(out["p_lower"], out["p_upper"])
        return out
    from statsmodels.stats.weightstats import CompareMeans, DescrStatsW, ttost_ind

    p_value, lower, upper = ttost_ind(b, a, -margin, margin, usevar="unequal")
    low, high = CompareMeans(DescrStatsW(b), DescrStatsW(a)).tconfint_diff(
        alpha=2 * alpha, usevar="unequal"
    )
    out.update(p_value=float(p_value), p_lower=float(lower[1]), p_upper=float(upper[1]),
               ci_low=float(low), ci_high=float(high))  # fmt: skip
    if -margin < low and high < margin:
        out["verdict"] = EQUIVALENT
    elif low >= margin or high <= -margin:
        out["verdict"] = NOT_EQUIVALENT
    else:
        out["verdict"] = INCONCLUSIVE
        out["seeds_needed"] = seeds_for_equivalence(a, b, margin, alpha, power)
    return out


def seeds_for_equivalence(
    a: np.ndarray, b: np.ndarray, margin: float, alpha: float = 0.05, power: float = 0.8
) -> int | None:
    """Seeds per arm for TOST to show equivalence with `power`, if the true difference and spread
    are the observed ones (normal approximation); None when the observed difference is itself
    outside the margin (more seeds would only confirm that)."""
    from scipy.stats import norm

    diff = abs(float(b.mean() - a.mean()))
    if diff >= margin:
        return None
    spread = float(np.var(a, ddof=1) + np.var(b, ddof=1))  # n * variance of the difference
    beta = 1 - power
    z = norm.ppf(1 - alpha) + norm.ppf(1 - (beta / 2 if diff == 0 else beta))
    return max(2, math.ceil(spread * z**2 / (margin - diff) ** 2))
