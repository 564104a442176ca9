"""Equivalence: does a re-run reproduce a result, within a margin, where bits cannot?

Two one-sided Welch tests (TOST, Schuirmann 1987) on `scores_b - scores_a`: the result is
`equivalent` when the (1 - 2 alpha) interval of the difference lies inside (-margin, +margin)
(equivalently, both one-sided tests reject at alpha), `not equivalent` when that interval lies
wholly outside, and `inconclusive` otherwise, with the seeds per arm that would settle it. Its
`bound` is the tightest margin the seeds support: the smallest at which the verdict would be
`equivalent`.

`resolvable_margin` is the margin a reproduction is judged at when nobody chose one: the margin
that n_a original seeds and n_b re-run seeds resolve, i.e. at which a perfect reproduction (the
same distribution again) comes out `equivalent` with probability `power`.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from xp.stats._checks import (
    ArrayLike,
    _check_alpha,
    _check_count,
    _check_finite,
    _is_constant,
    _scores,
)

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
        "bound" (the equivalence bound: max(|ci_low|, |ci_high|), the smallest margin these seeds
        would call `equivalent`: any margin above it is, none at or below it), "alpha", "n_a",
        "n_b", "seeds_needed" (per arm, for an inconclusive verdict; None when the observed
        difference is itself outside the margin)}.

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
        out["bound"] = abs(diff)
        return out
    from statsmodels.stats.weightstats import CompareMeans, DescrStatsW, ttost_ind

    p_value, lower, upper = ttost_ind(b, a, -margin, margin, usevar="unequal")
    low, high = CompareMeans(DescrStatsW(b), DescrStatsW(a)).tconfint_diff(
        alpha=2 * alpha, usevar="unequal"
    )
    out.update(p_value=float(p_value), p_lower=float(lower[1]), p_upper=float(upper[1]),
               ci_low=float(low), ci_high=float(high),
               bound=max(abs(float(low)), abs(float(high))))  # fmt: skip
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


def resolvable_margin(
    scores_a: ArrayLike, n_b: int, alpha: float = 0.05, power: float = 0.8
) -> float:
    """The margin that these original seeds and `n_b` re-run seeds can resolve: the default margin
    of a statistical reproduction.

    It is `factor(n_a, n_b) * sd(scores_a)`, with the factor chosen so that `tost` at `alpha`
    calls a perfect reproduction (the re-run seeds drawn from the original's own normal
    distribution) `equivalent` with probability `power`. The probability is taken over
    everything the seeds make random: the difference of means, the re-run's spread, and the
    original's spread that the margin itself is scaled by; so a margin from 5 noisy seeds is wider
    than the textbook (t_{1-alpha} + t_{1-beta/2}) * sd * sqrt(1/n_a + 1/n_b), which assumes the
    sd known and passes only 67% of perfect 5-vs-5 reproductions (0.8 needs 2.47 sd at 5 vs 5,
    1.48 sd at 10 vs 10, 0.78 sd at 30 vs 30). Only the original's sd sets it, so a noisy
    reproduction cannot widen its own margin; and at a true difference of the margin TOST still
    says `equivalent` at most `alpha` of the time (its own promise), so a change that large is
    caught.

    Args:
        scores_a: per-seed scores of the original (shape `[n_a]`, n_a >= 2).
        n_b: seeds of the reproduction (>= 2).
        alpha: level of each one-sided test of the `tost` it is for.
        power: probability that a perfect reproduction comes out `equivalent`, in (0, 1).

    Returns:
        The margin, in the scores' units (0 when the original seeds are all equal).

    Raises:
        ValueError: fewer than two scores, a NaN, n_b < 2, alpha outside (0, 0.5), power outside
            (0, 1).
    """
    a = _scores(scores_a, "scores_a", 2)
    n_b = _check_count(n_b, "n_b", 2)
    alpha = _check_alpha(alpha, 0.5)
    if not (isinstance(power, (int, float, np.floating)) and 0.0 < power < 1.0):
        raise ValueError(f"power must lie in (0, 1), got {power!r}")
    sd = 0.0 if _is_constant(a) else float(np.std(a, ddof=1))
    return _margin_factor(int(a.size), n_b, alpha, float(power)) * sd


_GRID = 100  # equal-probability points per spread: the factor to ~1e-3 relative (vs 1,000)


@functools.lru_cache(maxsize=256)
def _margin_factor(n_a: int, n_b: int, alpha: float, power: float) -> float:
    """K with P(tost(a, b, K * sd(a)) is equivalent) = power when a and b are the same normal."""
    from scipy import optimize
    from scipy.stats import chi2, norm, t

    u = (np.arange(_GRID) + 0.5) / _GRID  # midpoints of equal-probability bins of each sd (sigma 1)
    s_a = np.sqrt(chi2.ppf(u, n_a - 1) / (n_a - 1))[:, None]
    s_b = np.sqrt(chi2.ppf(u, n_b - 1) / (n_b - 1))[None, :]
    v_a, v_b = s_a**2 / n_a, s_b**2 / n_b
    df = (v_a + v_b) ** 2 / (v_a**2 / (n_a - 1) + v_b**2 / (n_b - 1))  # Welch's, as tost uses
    half = t.ppf(1 - alpha, df) * np.sqrt(v_a + v_b)  # half-width of the 1 - 2 alpha interval
    sd_diff = math.sqrt(1 / n_a + 1 / n_b)  # of the difference of means, independent of both sds

    def passing(k: float) -> float:  # P(|diff| < k * s_a - half), averaged over both sds
        room = np.maximum(k * s_a - half, 0.0)
        return float((2 * norm.cdf(room / sd_diff) - 1).mean())

    high = 1.0
    while passing(high) < power:
        high *= 2
    return float(optimize.brentq(lambda k: passing(k) - power, 0.0, high, xtol=1e-6))
