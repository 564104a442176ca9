"""Scores over folds x seeds: where the variance comes from, and comparisons paired by fold.

- `variance_components`: a crossed random-effects model (statsmodels `MixedLM`, REML) of
  score = mean + seed effect + split effect + residual, the variance of each, and what it means
  for how many seeds and splits to run (the variance of the grand mean is
  var_seed / S + var_split / K + var_residual / (S K)).
- `corrected_t`: the corrected resampled t-test (Nadeau and Bengio 2003). Folds share most of
  their training rows, so their scores are correlated and the plain t-test over folds is too
  confident (its false-positive rate far above alpha); the correction inflates the variance of
  the mean from var / J to (1 / J + n_validation / n_train) var.
- `compare_folds`: candidate vs baseline on the same folds: paired by fold (each fold's mean over
  seeds, the corrected t-test) and over seeds (each seed's mean over the folds, Welch), both of
  which must hold, in the shape `verdict` reads.

Pure numpy/scipy/statsmodels: no I/O.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from scipy import stats as sps

from xp.stats._checks import _check_alpha, _check_finite
from xp.stats.two_arms import _degenerate_p, welch_test

CORRECTED = "corrected_t"  # the test over splits, as a comparison names it
JOINT = "folds_and_seeds"  # the verdict's test: over splits and over seeds, both must pass


def corrected_t(
    diffs: Any, ratio: float, alternative: str = "greater", popmean: float = 0.0
) -> dict[str, Any]:
    """Nadeau and Bengio's corrected resampled t-test of mean(diffs) against `popmean`.

    Args:
        diffs: one value per split (a fold's mean difference, or a fold's score), J >= 2.
        ratio: n_validation / n_train of a split (1 / (K - 1) for K-fold).
        alternative: "greater", "less" or "two-sided".
        popmean: the mean under the null hypothesis.

    Returns:
        {"diff" (mean - popmean), "se" (corrected), "t", "df" (J - 1), "p_value", "n" (J),
        "ratio", "alternative"}.

    Raises:
        ValueError: fewer than 2 values, NaN, or a negative ratio.
    """
    d = np.asarray(diffs, dtype=float)
    if d.size < 2 or not np.all(np.isfinite(d)):
        raise ValueError(f"corrected_t needs 2 or more finite values, got {d.tolist()}")
    if not (math.isfinite(ratio) and ratio >= 0):
        raise ValueError(f"ratio must be >= 0 (n_validation / n_train), got {ratio}")
    j = d.size
    diff = float(d.mean() - popmean)
    se = math.sqrt((1 / j + ratio) * float(d.var(ddof=1)))
    df = j - 1
    if se == 0:  # (every split moved the same: the difference is known exactly)
        return {"diff": diff, "se": 0.0, "t": math.copysign(math.inf, diff) if diff else 0.0,
                "df": df, "p_value": _degenerate_p(diff, alternative), "n": j, "ratio": ratio,
                "alternative": alternative}  # fmt: skip
    t = diff / se
    if alternative == "greater":
        p = sps.t.sf(t, df)
    elif alternative == "less":
        p = sps.t.cdf(t, df)
    else:
        p = 2 * sps.t.sf(abs(t), df)
    return {"diff": diff, "se": se, "t": t, "df": df, "p_value": float(p), "n": j,
            "ratio": ratio, "alternative": alternative}  # fmt: skip


def folds_interval(
    values: dict[tuple[int, int], float], ratio: float, confidence: float = 0.95
) -> tuple[float, float]:
    """The interval of the grand mean over folds x seeds, with both sources of chance in it.

    The splits' means share the same seeds, so their spread holds no seed variance; the seeds'
    means share the same folds, so theirs holds no split variance. The standard error adds the
    two: s^2(seed means) / S + (1/K + ratio) s^2(split means) (the second with Nadeau and
    Bengio's correction for the folds' shared rows; the residual is counted in both: on the safe
    side), with Welch-Satterthwaite degrees of freedom. One seed: the splits' term alone."""
    by_split, by_seed = list(split_means(values).values()), list(seed_means(values).values())
    k, s = len(by_split), len(by_seed)
    if k < 2:
        return math.nan, math.nan
    mean = float(np.mean(list(values.values())))
    v_split = (1 / k + ratio) * float(np.var(by_split, ddof=1))
    v_seed = float(np.var(by_seed, ddof=1)) / s if s >= 2 else 0.0
    se = math.sqrt(v_split + v_seed)
    if se == 0:
        return mean, mean
    parts = [(v_split, k - 1)] + ([(v_seed, s - 1)] if s >= 2 else [])
    df = (v_split + v_seed) ** 2 / sum(v**2 / d for v, d in parts if v > 0)
    half = float(sps.t.ppf(0.5 + confidence / 2, df)) * se
    return mean - half, mean + half


def split_means(values: dict[tuple[int, int], float]) -> dict[int, float]:
    """(split, seed) -> value  ->  split -> the mean over its seeds."""
    by: dict[int, list[float]] = {}
    for (split, _seed), v in values.items():
        by.setdefault(split, []).append(v)
    return {k: float(np.mean(v)) for k, v in sorted(by.items())}


def seed_means(values: dict[tuple[int, int], float], splits: Any = None) -> dict[int, float]:
    """(split, seed) -> value  ->  seed -> the mean over its splits, for the seeds that have a
    value on every one of `splits` (default: every split in `values`): a seed missing a split
    would be averaged over other splits than the rest."""
    wanted = set(splits) if splits is not None else {k for k, _ in values}
    by: dict[int, dict[int, float]] = {}
    for (split, seed), v in values.items():
        if split in wanted:
            by.setdefault(seed, {})[split] = v
    return {k: float(np.mean(list(v.values()))) for k, v in sorted(by.items())
            if set(v) == wanted}  # fmt: skip


def compare_folds(
    a: dict[tuple[int, int], float],
    b: dict[tuple[int, int], float] | float,
    ratio: float,
    higher_is_better: bool = True,
    alpha: float = 0.05,
    min_effect: float = 0.0,
) -> dict[str, Any]:
    """Candidate A vs baseline B over the same splits, each under its own seeds.

    Two sources of chance, two tests, and the improvement must pass both (an intersection-union
    test: its level is alpha with no adjustment):

    - over splits: each split's mean difference, paired by split, with the corrected resampled
      t-test (the splits share their training rows; Nadeau and Bengio);
    - over seeds: each seed's mean over the splits, Welch between the two arms. A seed's effect
      (its init, its data order) is largely the same on every split, so the splits' differences
      share the two arms' seed draws: tested over splits alone, an A-vs-A of one configuration
      on real digits runs said `holds` in 15% of deals at alpha 0.05 (benchmarks/folds_a_vs_a.py);
      the seeds are the independent replicates of that part.

    Args:
        a: (split, seed) -> score of the candidate.
        b: the baseline's, or a number (one-sample tests of A's split and seed means).
        ratio: n_validation / n_train of a split.
        higher_is_better: the metric's direction.
        alpha: one-sided level of the verdict.
        min_effect: smallest improvement that counts (metric units).

    Returns:
        The keys `verdict` reads ("test" = "folds_and_seeds", the joint test in the improvement
        direction under that name, its reverse under "folds_and_seeds_worse", "diff", "diff_se"
        and "df" of the binding test: the one with the wider (1 - 2 alpha) bound) and
        "corrected_t"/"welch_seeds" (each test), "diff_ci95_low"/"diff_ci95_high", "splits",
        "mean_a", "mean_b", "n_a", "n_b", "alpha", "min_effect", "higher_is_better".

    Raises:
        ValueError: fewer than 2 splits shared by both arms, or fewer than 2 seeds in an arm
            with a value on every shared split.
    """
    alpha = _check_alpha(alpha, 0.5)
    min_effect = _check_finite(min_effect, "min_effect")
    sign = 1.0 if higher_is_better else -1.0
    ma = split_means(a)
    mb = split_means(b) if isinstance(b, dict) else {k: float(b) for k in ma}
    shared = sorted(set(ma) & set(mb))
    if len(shared) < 2:
        raise ValueError(f"{len(shared)} split(s) shared by both arms; a paired comparison "
                         "needs 2 or more")  # fmt: skip
    d = [sign * (ma[k] - mb[k]) for k in shared]
    tests = {CORRECTED: (corrected_t(d, ratio, "greater"), corrected_t(d, ratio, "less"))}
    sa = [sign * v for v in seed_means(a, shared).values()]
    sb = ([sign * v for v in seed_means(b, shared).values()] if isinstance(b, dict)
          else [sign * float(b)] * 2)  # fmt: skip
    if len(sa) < 2 or len(sb) < 2:  # (the splits alone say `holds` far too often: no verdict)
        raise ValueError(f"{min(len(sa), len(sb))} seed(s) with every split in an arm; a verdict "
                         "over folds needs 2 or more in each")  # fmt: skip
    tests["welch_seeds"] = (welch_test(sa, sb, "greater"), welch_test(sa, sb, "less"))

    def reach(t: dict[str, Any]) -> float:  # how far the (1 - 2 alpha) bound lies from diff
        return float(sps.t.ppf(1 - alpha, t["df"])) * t["se"] if t["se"] else 0.0

    binding = max((t for t, _ in tests.values()), key=reach)
    joint = {"p_value": max(t["p_value"] for t, _ in tests.values()),
             "tests": sorted(tests)}  # fmt: skip
    worse = {"p_value": max(w["p_value"] for _, w in tests.values())}
    half = float(sps.t.ppf(0.975, binding["df"])) * binding["se"] if binding["se"] else 0.0
    diff = float(np.mean(d))
    return {
        "test": JOINT, JOINT: joint, f"{JOINT}_worse": worse,
        **{name: t for name, (t, _) in tests.items()},
        "diff": diff, "diff_se": binding["se"], "df": binding["df"],
        "diff_ci95_low": diff - half, "diff_ci95_high": diff + half,
        "splits": shared, "ratio": ratio, "mean_a": float(np.mean([ma[k] for k in shared])),
        "mean_b": float(np.mean([mb[k] for k in shared])), "n_a": len(a),
        "n_b": len(b) if isinstance(b, dict) else 0, "alpha": alpha, "min_effect": min_effect,
        "higher_is_better": higher_is_better, "seeds_needed": None,
    }  # fmt: skip


def variance_components(values: dict[tuple[int, int], float]) -> dict[str, Any]:
    """Seed, split and residual variance of scores over a crossed folds x seeds design.

    The model is score = mu + a_seed + b_split + e with independent normal effects, fitted by REML
    (statsmodels `MixedLM` with the two factors as variance components of one group: the way
    statsmodels fits crossed random effects). With one seed (or one split) only the other
    factor and the residual are fitted.

    Args:
        values: (split, seed) -> score, over successful runs.

    Returns:
        {"n", "splits", "seeds", "variance": {"seed", "split", "residual"}, "share": {...},
        "dominant", "converged", "se_of_mean": {"now", "double_seeds", "double_splits"},
        "advice"}; {"n", "error"} when the model cannot be fitted.
    """
    import pandas as pd

    if not values:
        return {"n": 0, "splits": 0, "seeds": 0, "error": "no successful run reports the metric"}
    rows = [{"y": v, "split": k[0], "seed": k[1]} for k, v in values.items()]
    df = pd.DataFrame(rows)
    n_split, n_seed = df["split"].nunique(), df["seed"].nunique()
    factors = {name: f"0 + C({name})" for name, n in (("seed", n_seed), ("split", n_split))
               if n > 1}  # fmt: skip
    out: dict[str, Any] = {"n": len(df), "splits": int(n_split), "seeds": int(n_seed)}
    if len(df) < 4 or not factors:
        out["error"] = f"{len(df)} runs over {n_split} split(s) x {n_seed} seed(s): too few"
        return out
    var = {"seed": 0.0, "split": 0.0, "residual": 0.0}
    if float(df["y"].var(ddof=1)) > 0:
        from statsmodels.regression.mixed_linear_model import MixedLM

        df["group"] = 1
        model = MixedLM.from_formula("y ~ 1", df, groups="group", vc_formula=factors,
                                     re_formula="0")  # fmt: skip
        with warnings.catch_warnings():  # (boundary fits, a component at 0, say so themselves)
            warnings.simplefilter("ignore")
            try:
                fit = model.fit(reml=True)
            except (np.linalg.LinAlgError, ValueError) as e:
                out["error"] = f"the random-effects model could not be fitted ({e})"
                return out
        for name, v in zip(model.exog_vc.names, fit.vcomp, strict=True):
            var[name] = max(float(v), 0.0)
        var["residual"] = max(float(fit.scale), 0.0)
        out["converged"] = bool(fit.converged)
    total = sum(var.values())
    out["variance"] = var
    out["share"] = {k: (v / total if total else 0.0) for k, v in var.items()}
    out["dominant"] = max(var, key=var.get) if total else None
    s, k = n_seed, n_split

    def se(seeds: int, splits: int) -> float:
        return math.sqrt(var["seed"] / seeds + var["split"] / splits
                         + var["residual"] / (seeds * splits))  # fmt: skip

    out["se_of_mean"] = {"now": se(s, k), "double_seeds": se(2 * s, k),
                         "double_splits": se(s, 2 * k)}  # fmt: skip
    out["advice"] = advice(out)
    return out


def advice(vc: dict[str, Any]) -> str:
    """What the decomposition says about where to spend the next runs."""
    share, se = vc["share"], vc["se_of_mean"]
    if not vc.get("dominant"):
        return "no variance between runs: more seeds or splits would show nothing new"
    words = {"seed": "the seed", "split": "the split", "residual": "their interaction (residual)"}
    line = (f"{words[vc['dominant']]} dominates ({share[vc['dominant']]:.0%} of the variance: "
            f"seed {share['seed']:.0%}, split {share['split']:.0%}, residual "
            f"{share['residual']:.0%}); standard error of the mean {se['now']:.4f} now, "
            f"{se['double_splits']:.4f} with twice the splits, {se['double_seeds']:.4f} with "
            "twice the seeds")  # fmt: skip
    if se["double_splits"] < se["double_seeds"]:
        line += ": run more splits (resamples) rather than more seeds"
    elif se["double_seeds"] < se["double_splits"]:
        line += ": run more seeds rather than more splits"
    return line
