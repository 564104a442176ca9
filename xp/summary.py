"""A repeat's seeds as recorded, and the statistics over them: what each seed ended with, the
summary (every metric's mean, spread and intervals, the verdict against a baseline) and the
parent run's metrics. Pure functions of the recorded runs; running seeds is `xp.repeat`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xp import stats
from xp.config import higher_is_better
from xp.diagnose import diagnosis, overfitting
from xp.train import fingerprint

SUCCESS = ("ok", "early_stopped")
SUMMARY_PREFIXES = ("test/", "test:", "best/val/", "retention/")  # (test:<name>/: extra test sets)


@dataclass
class SeedRun:
    """What one seed's training run ended with."""

    seed: int
    run_id: str | None
    status: str  # MLflow status, or "MISSING" when no run was recorded
    outcome: str  # ok | early_stopped | failed | killed | crashed
    metrics: dict[str, float] = field(default_factory=dict)
    fingerprints: dict[str, str] = field(default_factory=dict)  # kind -> hash (xp.fingerprint.*)
    diagnosis: dict[str, Any] = field(default_factory=dict)  # xp.diagnosis.* read back
    errors: dict[str, Any] = field(default_factory=dict, repr=False)  # errors/errors.json
    fold: int | None = None  # a folds repeat's: the fold (or resample) it trained on
    split: dict[str, str] = field(default_factory=dict)  # its `xp.split.*` tags (md5, sizes)

    @property
    def succeeded(self) -> bool:
        return self.outcome in SUCCESS

    @property
    def key(self) -> int | tuple[int, int]:
        """What tells it apart in its repeat: the seed, or (fold, seed) in a folds repeat."""
        return self.seed if self.fold is None else (self.fold, self.seed)

    @property
    def short(self) -> int | str:
        """How lists name it: the seed, or `fold/seed` (`2/3`) in a folds repeat."""
        return self.seed if self.fold is None else f"{self.fold}/{self.seed}"

    @property
    def label(self) -> str:
        return f"seed {self.seed}" if self.fold is None else f"fold {self.fold} seed {self.seed}"


def run_fold(run: Any) -> int | None:
    """The fold (or resample) a training run trained on; None on the files' own split."""
    index = run.data.params.get("data.resplit.index")
    return int(index) if index not in (None, "None") else None


def seed_runs(children: list[Any], seeds: list[int], folds: int | None = None) -> list[SeedRun]:
    """The latest child run of each seed (of each (fold, seed) with `folds`), with its outcome
    (`crashed`/`killed`: no outcome)."""
    keys = [(f, s) for f in range(folds) for s in seeds] if folds else [(None, s) for s in seeds]
    latest: dict[tuple, Any] = {}
    for run in children:
        key = (run_fold(run) if folds else None, int(run.data.params.get("seed", -1)))
        newer = key not in latest or run.info.start_time > latest[key].info.start_time
        if key[1] in seeds and newer:
            latest[key] = run
    out = []
    for fold, seed in keys:
        run = latest.get((fold, seed))
        if run is None:
            out.append(SeedRun(seed, None, "MISSING", "crashed", fold=fold))
            continue
        outcome = run.data.tags.get("xp.outcome")
        if outcome is None:
            outcome = "killed" if run.info.status in ("KILLED", "RUNNING") else "crashed"
        prints = {k.removeprefix(fingerprint.TAG): v for k, v in run.data.tags.items()
                  if k.startswith(fingerprint.TAG)}  # fmt: skip
        split = {k.removeprefix("xp.split."): v for k, v in run.data.tags.items()
                 if k.startswith("xp.split.")}  # fmt: skip
        out.append(SeedRun(seed, run.info.run_id, run.info.status, outcome,
                           dict(run.data.metrics), prints,
                           overfitting.from_tags(run.data.tags), fold=fold,
                           split=split))  # fmt: skip
    return out


def successful_values(runs: list[SeedRun], metric: str) -> dict[Any, float]:
    """Seed (or (fold, seed)) -> metric, over the successful runs that report it."""
    return {r.key: r.metrics[metric] for r in runs if r.succeeded and metric in r.metrics}


def split_ratio(runs: list[SeedRun]) -> float | None:
    """n_validation / n_train of a folds repeat's splits (the corrected t-test's ratio); None when
    no run recorded its split's sizes (none got that far)."""
    sizes = [(int(r.split["n_validation"]), int(r.split["n_train"])) for r in runs
             if "n_validation" in r.split and "n_train" in r.split]  # fmt: skip
    return float(np.mean([v / t for v, t in sizes])) if sizes else None


def _summary_keys(runs: list[SeedRun]) -> list[str]:
    keys = {k for r in runs for k in r.metrics if k.startswith(SUMMARY_PREFIXES)}
    return sorted(keys)


def _stats_of(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    d = stats.describe(values)
    low, high = stats.t_interval(values) if len(values) > 1 else (math.nan, math.nan)
    d.update(ci95_low=low, ci95_high=high)
    return d


def summarize(
    runs: list[SeedRun],
    metric: str,
    baseline: dict[str, Any] | None = None,
    alpha: float = 0.05,
    min_effect: float = 0.0,
    rng: int = 0,
) -> dict[str, Any]:
    """Statistics over seeds, over the successful ones and over all that reported the metric.

    Args:
        runs: the seeds' runs.
        metric: the metric the verdict is about (e.g. `test/f1`).
        baseline: {"kind": "run"|"value", "id"?, "values": [...]} or None.
        alpha: significance level of the verdict.
        min_effect: smallest improvement that counts (metric units).
        rng: seed of the bootstrap intervals (reports are reproducible).

    Returns:
        A JSON-serialisable summary (also `report/summary.json`).
    """
    better_high = higher_is_better(metric)
    summary: dict[str, Any] = {
        "metric": metric,
        "higher_is_better": better_high,
        "seeds": sorted({r.seed for r in runs}),
        "failed_seeds": [r.short for r in runs if not r.succeeded],
        "per_seed": [
            {k: v for k, v in r.__dict__.items() if k not in ("errors", "split")} for r in runs
        ],  # fmt: skip
        "seed_check": fingerprint.seed_check(runs),
        "diagnosis": diagnosis.over_seeds(runs),
        "stats": {},
    }
    for key in _summary_keys(runs):
        ok = [r.metrics[key] for r in runs if r.succeeded and key in r.metrics]
        every = [r.metrics[key] for r in runs if key in r.metrics]
        summary["stats"][key] = {"successful": _stats_of(ok), "all": _stats_of(every)}
    values = list(successful_values(runs, metric).values())
    if metric not in summary["stats"] and values == []:
        summary["stats"][metric] = {"successful": {"n": 0}, "all": {"n": 0}}
    folded = any(r.fold is not None for r in runs)
    if len(values) >= 2 and not folded:  # (folds: the runs are not independent draws)
        summary["bootstrap"] = stats.bootstrap_interval(values, method="bca", rng=rng)
    val_key = f"best/val/{metric.rsplit('/', 1)[-1]}"
    val_values = [r.metrics[val_key] for r in runs if r.succeeded and val_key in r.metrics]
    if val_values:
        summary["expected_max"] = {
            "metric": val_key,
            "values": stats.expected_max(val_values, higher_is_better=better_high).tolist(),
        }
    summary["baseline"] = baseline
    summary["verdict"] = None
    if folded:  # (the intervals over folds replace the t intervals over independent seeds)
        summary.update(_over_folds(runs, metric, baseline, better_high, alpha, min_effect))
        for key, ci in summary["folds"]["by_metric"].items():
            summary["stats"][key]["successful"].update(ci95_low=ci["ci95_low"],
                                                       ci95_high=ci["ci95_high"])  # fmt: skip
        return _jsonable(summary)
    if baseline is not None and len(values) >= 2:
        cmp = stats.compare(values, baseline["values"], better_high, alpha, min_effect, rng=rng)
        summary["comparison"] = cmp
        summary["verdict"] = stats.verdict(cmp, alpha, min_effect)
        summary["min_rank_p"] = stats.min_rank_p(len(values), len(baseline["values"]))
    return _jsonable(summary)


def _over_folds(
    runs: list[SeedRun], metric: str, baseline: dict[str, Any] | None, better_high: bool,
    alpha: float, min_effect: float,
) -> dict[str, Any]:  # fmt: skip
    """A folds repeat's statistics: every metric's interval over its splits' means with the
    corrected variance, the variance decomposition of `metric`, and the verdict paired by split.

    Runs of one fold share its training rows, and folds share most of theirs, so the K x S runs
    are not K x S independent draws: a t interval over them all would be far too narrow."""
    ratio = split_ratio(runs)
    out: dict[str, Any] = {}
    for key in _summary_keys(runs) if ratio is not None else []:
        by = {r.key: r.metrics[key] for r in runs if r.succeeded and key in r.metrics}
        low, high = stats.folds_interval(by, ratio)
        out[key] = {"ci95_low": low, "ci95_high": high, "splits": len(stats.split_means(by))}
    values = successful_values(runs, metric)
    first = next((r.split for r in runs if r.split), {})
    folds = {"kind": first.get("kind"), "count": first.get("count"), "ratio": ratio,
             "interval": "the seeds' means' spread plus the splits' means' (corrected for their "
                         "shared rows, Nadeau and Bengio), Welch-Satterthwaite df",
             "by_split": stats.split_means(values),
             "split_md5": {r.fold: r.split.get("md5") for r in runs if r.split},
             "variance": stats.variance_components(values), "by_metric": out}  # fmt: skip
    result: dict[str, Any] = {"folds": folds}
    other = None
    if baseline is not None:
        other = baseline["values"][0] if baseline["kind"] == "value" else baseline.get("by_split")
    if other is not None and ratio is not None:
        try:
            cmp = stats.compare_folds(values, other, ratio, better_high, alpha, min_effect)
        except ValueError as e:  # (too few complete seeds or shared folds: no verdict, said)
            result["no_verdict"] = str(e)
        else:
            result["comparison"], result["verdict"] = cmp, stats.verdict(cmp, alpha, min_effect)
    return result


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def parent_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """`M/mean`, `M/std`, `M/ci95_low`, `M/ci95_high`, `M/n` over the successful seeds."""
    out: dict[str, float] = {}
    for key, both in summary["stats"].items():
        s = both["successful"]
        out[f"{key}/n"] = float(s["n"])
        for name in ("mean", "std", "ci95_low", "ci95_high"):
            value = s.get(name)
            if value is not None and math.isfinite(value):
                out[f"{key}/{name}"] = float(value)
    return out
