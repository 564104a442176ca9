"""One configuration: describe its seeds, intervals for their mean (t, bootstrap)."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from scipy import stats as sps

from xp.stats._checks import (
    ArrayLike,
    RngLike,
    _check_confidence,
    _check_count,
    _is_constant,
    _scores,
    _var,
)

_BOOTSTRAP_METHODS = {"bca": "BCa", "percentile": "percentile"}
# Seeds per arm from which bootstrap intervals are trusted: percentile and BCa intervals are too
# narrow for small samples (e.g. Hesterberg 2015, "What teachers should know about the
# bootstrap"), noticeably so below ~10.
_BOOTSTRAP_RELIABLE_N = 10


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
