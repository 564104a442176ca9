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

    @property
    def succeeded(self) -> bool:
        return self.outcome in SUCCESS


def seed_runs(children: list[Any], seeds: list[int]) -> list[SeedRun]:
    """The latest child run of each seed, with its outcome (`crashed`/`killed`: no outcome)."""
    latest: dict[int, Any] = {}
    for run in children:
        seed = int(run.data.params.get("seed", -1))
        newer = seed not in latest or run.info.start_time > latest[seed].info.start_time
        if seed in seeds and newer:
            latest[seed] = run
    out = []
    for seed in seeds:
        run = latest.get(seed)
        if run is None:
            out.append(SeedRun(seed, None, "MISSING", "crashed"))
            continue
        outcome = run.data.tags.get("xp.outcome")
        if outcome is None:
            outcome = "killed" if run.info.status in ("KILLED", "RUNNING") else "crashed"
        prints = {k.removeprefix(fingerprint.TAG): v for k, v in run.data.tags.items()
                  if k.startswith(fingerprint.TAG)}  # fmt: skip
        out.append(SeedRun(seed, run.info.run_id, run.info.status, outcome,
                           dict(run.data.metrics), prints,
                           overfitting.from_tags(run.data.tags)))  # fmt: skip
    return out


def successful_values(runs: list[SeedRun], metric: str) -> dict[int, float]:
    """Seed -> metric, over the successful seeds that report it."""
    return {r.seed: r.metrics[metric] for r in runs if r.succeeded and metric in r.metrics}


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
        "seeds": [r.seed for r in runs],
        "failed_seeds": [r.seed for r in runs if not r.succeeded],
        "per_seed": [{k: v for k, v in r.__dict__.items() if k != "errors"} for r in runs],
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
    if len(values) >= 2:
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
    if baseline is not None and len(values) >= 2:
        cmp = stats.compare(values, baseline["values"], better_high, alpha, min_effect, rng=rng)
        summary["comparison"] = cmp
        summary["verdict"] = stats.verdict(cmp, alpha, min_effect)
        summary["min_rank_p"] = stats.min_rank_p(len(values), len(baseline["values"]))
    return _jsonable(summary)


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
