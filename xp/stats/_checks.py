"""Input checks shared by the statistics: one clear ValueError per bad argument."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

ArrayLike = Sequence[float] | np.ndarray
RngLike = np.random.Generator | int | None

_ALTERNATIVES = ("greater", "less", "two-sided")


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
