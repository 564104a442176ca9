"""Planning: seeds needed for a given power, and the expected best of k tries."""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy.special import gammaln

from xp.stats._checks import (
    ArrayLike,
    _check_alpha,
    _check_count,
    _check_finite,
    _scores,
)

_POWER_ALTERNATIVES = {"larger": "larger", "greater": "larger", "two-sided": "two-sided"}

# ---------------------------------------------------------------------------------------------
# power


def _power_alternative(alternative: str) -> str:
    if alternative not in _POWER_ALTERNATIVES:
        raise ValueError(
            f"alternative must be 'larger' (one-sided) or 'two-sided', got {alternative!r}"
        )
    return _POWER_ALTERNATIVES[alternative]


def power_of(
    n: int, diff: float, std: float, alpha: float = 0.05, alternative: str = "larger"
) -> float:
    """Power of a two-sample t-test with n seeds per arm (statsmodels TTestIndPower).

    The chance of p < alpha when the means truly differ by `diff` and every seed's score has
    standard deviation `std`. With std == 0 the answer follows `welch_test`'s zero-variance rule:
    1.0 when diff is non-zero and in the tested direction, else 0.0.

    Args:
        n: seeds per arm, >= 2.
        diff: true difference of means (candidate - baseline); may be <= 0.
        std: common per-seed standard deviation, >= 0.
        alpha: significance level in (0, 1).
        alternative: "larger" (one-sided, "greater" accepted too) or "two-sided".

    Returns:
        The power, in [0, 1].

    Raises:
        ValueError: n < 2, std < 0, non-finite diff, alpha outside (0, 1), bad alternative.
    """
    from statsmodels.stats.power import TTestIndPower

    n = _check_count(n, "n", 2)
    diff = _check_finite(diff, "diff")
    std = _check_finite(std, "std")
    if std < 0:
        raise ValueError(f"std must be >= 0, got {std}")
    alpha = _check_alpha(alpha)
    alt = _power_alternative(alternative)
    if std == 0:
        hit = diff > 0 if alt == "larger" else diff != 0
        return 1.0 if hit else 0.0
    power = TTestIndPower().power(
        effect_size=diff / std, nobs1=n, alpha=alpha, ratio=1.0, alternative=alt
    )
    return float(min(1.0, max(0.0, power)))


def seeds_needed(
    diff: float, std: float, alpha: float = 0.05, power: float = 0.8, alternative: str = "larger"
) -> int:
    """Seeds per arm for a two-sample t-test to detect a true difference `diff` with `power`.

    statsmodels' `TTestIndPower.solve_power` on effect size diff / std, rounded up; the integer
    is then checked with `power_of` (the smallest n whose power reaches `power`), and a search
    takes over where the solver fails to converge (very large effects). At least 2, the fewest
    that give a variance; std == 0 gives 2.

    Args:
        diff: true difference of means to detect, > 0.
        std: common per-seed standard deviation, >= 0.
        alpha: significance level in (0, 1).
        power: wanted power in (0, 1).
        alternative: "larger" (one-sided, "greater" accepted too) or "two-sided".

    Returns:
        Seeds per arm.

    Raises:
        ValueError: diff <= 0, std < 0, alpha or power outside (0, 1), bad alternative.
    """
    from statsmodels.stats.power import TTestIndPower

    diff = _check_finite(diff, "diff")
    std = _check_finite(std, "std")
    if diff <= 0:
        raise ValueError(f"diff must be > 0 (the difference to detect), got {diff}")
    if std < 0:
        raise ValueError(f"std must be >= 0, got {std}")
    alpha = _check_alpha(alpha)
    if not (isinstance(power, (int, float, np.floating)) and 0.0 < power < 1.0):
        raise ValueError(f"power must lie in (0, 1), got {power!r}")
    alt = _power_alternative(alternative)

    def enough(n: int) -> bool:
        return power_of(n, diff, std, alpha, alt) >= power

    if std == 0 or enough(2):
        return 2
    with warnings.catch_warnings():
        # A failed root-find returns NaN (handled below); its ConvergenceWarning is noise here.
        warnings.simplefilter("ignore")
        solved = TTestIndPower().solve_power(
            effect_size=diff / std, alpha=alpha, power=power, ratio=1.0, alternative=alt
        )
    solved = float(np.squeeze(solved))
    if math.isfinite(solved):
        n = max(3, math.ceil(solved))
        # The solver's answer is a float near the boundary: fix the rounding by checking.
        while n > 3 and enough(n - 1):
            n -= 1
        while not enough(n):
            n += 1
        return n
    # Fallback: double to bracket, then bisect on the (monotone) power curve.
    low, high = 2, 4
    while not enough(high):
        low, high = high, high * 2
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if enough(mid) else (mid, high)
    return high


# ---------------------------------------------------------------------------------------------
# budgets


def expected_max(
    scores: ArrayLike, n_trials: int | None = None, higher_is_better: bool = True
) -> np.ndarray:
    """Expected best score over k = 1..K tries (Dodge et al. 2019, "Show Your Work").

    If k seeds/configurations are drawn i.i.d. (with replacement) from the empirical
    distribution of the N observed scores v_(1) <= ... <= v_(N), then
    E[max_k] = sum_i v_(i) * ((i/N)^k - ((i-1)/N)^k). It is evaluated in the equivalent form
    v_(N) - sum_{i<N} (v_(i+1) - v_(i)) * (i/N)^k, whose terms are non-negative and shrink with k,
    so the curve is non-decreasing and never exceeds the maximum even in floating point.
    E[max_1] is the mean; E[max_k] approaches max(scores) as k grows.

    Args:
        scores: observed per-seed (or per-configuration) scores.
        n_trials: largest k; defaults to N = len(scores).
        higher_is_better: False for loss-like metrics: the expected best is then the expected
            minimum (negate, apply, negate).

    Returns:
        Array [E[best_1], ..., E[best_K]].

    Raises:
        ValueError: empty scores, NaN/inf, or n_trials < 1.
    """
    x = _scores(scores)
    k_max = x.size if n_trials is None else _check_count(n_trials, "n_trials", 1)
    if not higher_is_better:
        return -expected_max(-x, k_max, higher_is_better=True)
    v = np.sort(x)
    n = v.size
    gaps = np.diff(v)  # v_(i+1) - v_(i), i = 1..N-1
    cdf = np.arange(1, n) / n  # i / N
    k = np.arange(1, k_max + 1)[:, None]
    return v[-1] - (gaps[None, :] * cdf[None, :] ** k).sum(axis=1)


def expected_max_unbiased(scores: ArrayLike, higher_is_better: bool = True) -> np.ndarray:
    """Unbiased estimate of the expected best score of k = 1..N trials (Dodge et al. 2021,
    "Expected Validation Performance and Estimation of a Random Variable's Maximum").

    The average, over all C(N, k) subsets of k of the N observed scores, of the subset's best:
    with v_(1) <= ... <= v_(N), E[max_k] = sum_{i>=k} v_(i) * C(i-1, k-1) / C(N, k), a
    U-statistic, so unbiased for the expected maximum of k i.i.d. trials (the with-replacement
    form, `expected_max`, is biased low for k near N). E[max_1] is the mean and E[max_N] the
    observed best.

    Args:
        scores: the N observed scores (one per finished trial).
        higher_is_better: False for loss-like metrics (the expected minimum).

    Returns:
        Array [E[best_1], ..., E[best_N]].

    Raises:
        ValueError: empty scores, NaN or inf.
    """
    x = _scores(scores)
    if not higher_is_better:
        return -expected_max_unbiased(-x)
    v = np.sort(x)
    n = v.size
    i = np.arange(1, n + 1)[None, :]  # rank of each score
    k = np.arange(1, n + 1)[:, None]
    with np.errstate(invalid="ignore"):  # C(i-1, k-1) is 0 where i < k: the log form is -inf
        log_w = (
            gammaln(i) - gammaln(k) - gammaln(i - k + 1) - (gammaln(n + 1) - gammaln(k + 1)
                                                            - gammaln(n - k + 1))
        )  # fmt: skip
    w = np.where(i >= k, np.exp(np.where(i >= k, log_w, 0.0)), 0.0)
    return (w * v[None, :]).sum(axis=1)


def expected_max_band(
    scores: ArrayLike,
    higher_is_better: bool = True,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    rng: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A percentile bootstrap band around `expected_max_unbiased` (scipy.stats.bootstrap,
    resampling the trials): (low, high), each of length N. With one score the band is that
    score."""
    x = _scores(scores)
    if x.size < 2 or np.all(x == x[0]):
        curve = expected_max_unbiased(x, higher_is_better)
        return curve, curve
    from scipy import stats as sps

    res = sps.bootstrap(
        (x,), lambda s: expected_max_unbiased(s, higher_is_better), vectorized=False,
        n_resamples=n_resamples, confidence_level=confidence, method="percentile", rng=rng,
    )  # fmt: skip
    return np.asarray(res.confidence_interval.low), np.asarray(res.confidence_interval.high)
