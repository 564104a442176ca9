"""Statistics for per-seed scores: does a fine-tuning result hold against a baseline?

Every function takes 1-D arrays of per-seed scores (one number per training run). The seed is the
unit of replication: evaluation examples within one run are not independent replicates of the
training procedure, so the spread we test against is the spread across seeds, and the sample size
is the number of seeds (typically 3-10).

What is used, and its limits:

- Intervals for a mean default to the Student-t interval (`t_interval`). Bootstrap intervals
  (`bootstrap_interval`, percentile or BCa) make fewer assumptions but under-cover below ~10
  seeds: with 3-5 seeds a nominal 95% bootstrap interval contains the truth noticeably less
  often, because the resamples can only reuse the few values seen. The t interval assumes
  roughly normal seed-to-seed noise, which is usually the better bet at these sizes.
- Two arms are compared with Welch's t-test (`welch_test`), which does not assume equal
  variances. The rank test (`mann_whitney`) drops the normality assumption but has a floor on its
  p-value: with n_a vs n_b seeds it can never go below 1 / C(n_a + n_b, n_a) (one-sided), so 3 vs
  3 seeds can never give p < 0.05 (`min_rank_p`). Read a non-significant rank test on few seeds
  in that light.
- `prob_improvement` (P(A > B), ties counted 1/2) and `expected_max` (Dodge et al. 2019, the
  expected best score over k tries) describe effect sizes and budgets; they are not tests.
- When several comparisons are made (several metrics or candidates), `holm` adjusts the p-values
  so that the chance of any false "holds" stays below alpha (family-wise error), without
  assuming independence between the tests.
- `seeds_needed` / `power_of` are power analyses for a two-sample t-test. Fed with an observed
  difference they are a planning hint ("how many seeds would make this conclusive"), not
  evidence: the observed difference is itself noisy.
- `compare` collects all of the above for "candidate A vs baseline B" with the metric's direction
  handled, and `verdict` turns it into "holds" / "does_not_hold" / "inconclusive".

Pure numpy/scipy/statsmodels: no I/O, no logging. Every random function takes
`rng: np.random.Generator | int | None` and uses it (and only it), so a given seed reproduces.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as sps

ArrayLike = Sequence[float] | np.ndarray
RngLike = np.random.Generator | int | None

_ALTERNATIVES = ("greater", "less", "two-sided")
_POWER_ALTERNATIVES = {"larger": "larger", "greater": "larger", "two-sided": "two-sided"}
_BOOTSTRAP_METHODS = {"bca": "BCa", "percentile": "percentile"}
# Seeds per arm from which bootstrap intervals are trusted: percentile and BCa intervals are too
# narrow for small samples (e.g. Hesterberg 2015, "What teachers should know about the
# bootstrap"), noticeably so below ~10.
_BOOTSTRAP_RELIABLE_N = 10
# Exact enumeration of rank-test permutations with ties: C(8 + 8, 8) = 12870 takes ~0.1 s,
# beyond that the tie-corrected normal approximation is both cheap and adequate.
_MAX_EXACT_PARTITIONS = 20_000


# ---------------------------------------------------------------------------------------------
# input checks


def _scores(x: ArrayLike, name: str = "scores", min_n: int = 1) -> np.ndarray:
    """`x` as a 1-D float array, or ValueError naming what is wrong with it."""
    try:
        arr = np.asarray(x, dtype=float)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be numbers (per-seed scores): {e}") from None
    if arr.ndim != 1:
        raise ValueError(
            f"{name} must be a 1-D array of per-seed scores, got an array of shape {arr.shape}"
        )
    if arr.size == 0:
        raise ValueError(f"{name} is empty: need at least {min_n} per-seed score(s)")
    if np.isnan(arr).any():
        raise ValueError(
            f"{name} contains NaN at index {int(np.flatnonzero(np.isnan(arr))[0])} "
            "(a failed or unfinished seed?); drop it explicitly before testing"
        )
    if np.isinf(arr).any():
        raise ValueError(f"{name} contains an infinite value")
    if arr.size < min_n:
        raise ValueError(
            f"{name} has {arr.size} value(s) but at least {min_n} are needed "
            "(a variance needs two or more seeds)"
        )
    return arr


def _check_alpha(alpha: float, upper: float = 1.0) -> float:
    if not (isinstance(alpha, (int, float, np.floating)) and 0.0 < alpha < upper):
        raise ValueError(f"alpha must lie in (0, {upper:g}), got {alpha!r}")
    return float(alpha)


def _check_confidence(confidence: float) -> float:
    if not (isinstance(confidence, (int, float, np.floating)) and 0.0 < confidence < 1.0):
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    return float(confidence)


def _check_alternative(alternative: str) -> str:
    if alternative not in _ALTERNATIVES:
        raise ValueError(f"alternative must be one of {_ALTERNATIVES}, got {alternative!r}")
    return alternative


def _check_count(n: int, name: str, minimum: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {n!r}")
    return int(n)


def _check_finite(value: float, name: str) -> float:
    if not (isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _is_constant(x: np.ndarray) -> bool:
    # ptp, not var == 0: the mean of e.g. [0.1, 0.1, 0.1] is not exactly 0.1 in floating point,
    # so the variance of an all-equal array can come out as 1e-35 instead of 0.
    return bool(np.ptp(x) == 0)


def _var(x: np.ndarray) -> float:
    """Sample variance (ddof=1), exactly 0 for all-equal scores."""
    return 0.0 if _is_constant(x) else float(np.var(x, ddof=1))


# ---------------------------------------------------------------------------------------------
# one arm


def describe(scores: ArrayLike) -> dict[str, Any]:
    """Summary statistics of per-seed scores.

    The IQM (interquartile mean) is the mean of the middle 50% of the scores,
    `scipy.stats.trim_mean(scores, 0.25)` as in rliable: robust to one bad seed, less noisy than
    the median.

    Args:
        scores: per-seed scores.

    Returns:
        {"n", "mean", "std", "var", "sem", "median", "iqm", "min", "max"}; std and var use
        ddof=1 and sem = std / sqrt(n). With a single score std, var and sem are NaN.

    Raises:
        ValueError: `scores` is empty, not 1-D, or contains NaN/inf.
    """
    x = _scores(scores)
    n = x.size
    # A single seed has no spread to estimate: NaN says "unknown" without numpy's ddof warning.
    var = _var(x) if n > 1 else math.nan
    std = math.sqrt(var) if n > 1 else math.nan
    return {
        "n": int(n),
        "mean": float(np.mean(x)),
        "std": std,
        "var": var,
        "sem": std / math.sqrt(n) if n > 1 else math.nan,
        "median": float(np.median(x)),
        "iqm": float(sps.trim_mean(x, 0.25)),
        "min": float(np.min(x)),
        "max": float(np.max(x)),
    }


def t_interval(scores: ArrayLike, confidence: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of the mean: mean +- t_{(1+c)/2, n-1} * s / sqrt(n).

    The default interval for few seeds (see the module docstring). All-equal scores give the
    zero-width interval (mean, mean).

    Args:
        scores: per-seed scores, at least 2.
        confidence: two-sided confidence level in (0, 1).

    Returns:
        (low, high).

    Raises:
        ValueError: fewer than 2 scores, NaN/inf, or confidence outside (0, 1).
    """
    x = _scores(scores, min_n=2)
    confidence = _check_confidence(confidence)
    mean = float(np.mean(x))
    if _is_constant(x):
        # scipy's t.interval rejects scale=0 (returns NaN); the honest answer is zero width.
        return mean, mean
    sem = float(sps.sem(x))
    low, high = sps.t.interval(confidence, x.size - 1, loc=mean, scale=sem)
    return float(low), float(high)


def _mean_diff(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Vectorised statistic for the two-sample bootstrap: mean(x) - mean(y)."""
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def _bootstrap(
    samples: tuple[np.ndarray, ...],
    statistic,
    confidence: float,
    method: str,
    n_resamples: int,
    rng: RngLike,
) -> dict[str, Any]:
    """scipy.stats.bootstrap with the few-seeds caveats and the degenerate case handled."""
    confidence = _check_confidence(confidence)
    key = str(method).lower()
    if key not in _BOOTSTRAP_METHODS:
        raise ValueError(f"method must be 'bca' or 'percentile', got {method!r}")
    n_resamples = _check_count(n_resamples, "n_resamples", 1)
    n = min(s.size for s in samples)
    reliable = n >= _BOOTSTRAP_RELIABLE_N
    notes = []
    if not reliable:
        notes.append(
            f"bootstrap intervals under-cover below ~{_BOOTSTRAP_RELIABLE_N} seeds (n={n}); "
            "prefer the t interval"
        )
    estimate = float(statistic(*samples))
    if all(_is_constant(s) for s in samples):
        # Every resample gives the same value: the interval is that value. BCa would divide by
        # zero in its acceleration and warn; there is nothing to estimate.
        notes.append("all scores are equal, so every resample agrees: zero-width interval")
        low = high = estimate
    else:
        with warnings.catch_warnings(record=True) as caught:
            # Recorded, not shown: a degenerate bootstrap distribution (e.g. BCa when almost no
            # resample falls below the estimate) is reported in the note, not as a warning.
            warnings.simplefilter("always")
            res = sps.bootstrap(
                samples,
                statistic,
                n_resamples=n_resamples,
                confidence_level=confidence,
                method=_BOOTSTRAP_METHODS[key],
                rng=np.random.default_rng(rng),
            )
        low = float(res.confidence_interval.low)
        high = float(res.confidence_interval.high)
        if caught or not (math.isfinite(low) and math.isfinite(high)):
            messages = "; ".join(str(w.message).split("\n")[0] for w in caught)
            notes.append(f"bootstrap is degenerate for these scores: {messages or 'NaN bounds'}")
    return {
        "low": low,
        "high": high,
        "estimate": estimate,
        "method": key,
        "confidence": confidence,
        "n_resamples": n_resamples,
        "reliable": reliable,
        "note": "; ".join(notes) if notes else None,
    }


def bootstrap_interval(
    scores: ArrayLike,
    confidence: float = 0.95,
    method: str = "bca",
    n_resamples: int = 10_000,
    rng: RngLike = None,
) -> dict[str, Any]:
    """Bootstrap confidence interval of the mean (scipy.stats.bootstrap).

    Reproducible: the same `rng` seed gives the same interval (a Generator passed in is
    advanced). With all-equal scores the interval is (value, value) with a note instead of BCa's
    division by zero.

    Args:
        scores: per-seed scores, at least 2.
        confidence: two-sided confidence level in (0, 1).
        method: "bca" (bias-corrected and accelerated) or "percentile".
        n_resamples: number of bootstrap resamples.
        rng: Generator, seed, or None for fresh entropy.

    Returns:
        {"low", "high", "estimate" (the mean), "method", "confidence", "n_resamples",
        "reliable" (n >= 10), "note" (why not to trust it, or None)}.

    Raises:
        ValueError: fewer than 2 scores, NaN/inf, bad confidence, method or n_resamples.
    """
    x = _scores(scores, min_n=2)
    return _bootstrap((x,), np.mean, confidence, method, n_resamples, rng)


# ---------------------------------------------------------------------------------------------
# two arms


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
    reject, adjusted, _, _ = multipletests(p, alpha=alpha, method="holm")
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


# ---------------------------------------------------------------------------------------------
# verdicts


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
    missing = [k for k in ("welch", "welch_worse", "diff", "diff_se", "df") if k not in cmp]
    if missing:
        raise ValueError(f"cmp is not a compare() result: missing {missing}")
    alpha = _check_alpha(cmp.get("alpha", 0.05) if alpha is None else alpha, upper=0.5)
    min_effect = _check_finite(
        cmp.get("min_effect", 0.0) if min_effect is None else min_effect, "min_effect"
    )
    low, high = _one_sided_bounds(cmp["diff"], cmp["diff_se"], cmp["df"], alpha)
    if cmp["welch"]["p_value"] < alpha and low > min_effect:
        return "holds"
    if cmp["welch_worse"]["p_value"] < alpha or high < min_effect:
        return "does_not_hold"
    return "inconclusive"
