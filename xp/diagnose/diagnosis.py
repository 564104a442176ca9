"""A repeat's diagnosis over its seeds: overfitting and the monitor's events, in a few words."""

from __future__ import annotations

from typing import Any

from xp.diagnose import errors, overfitting
from xp.diagnose.monitor import KINDS


def over_seeds(runs: list[Any]) -> dict[str, Any]:
    """How many seeds overfit (and the patience that would have stopped them), and the monitor's
    events over the seeds that recorded them.

    Args:
        runs: the seeds' runs (`seed`, `metrics` with `monitor/<kind>` counts, `diagnosis`).
    """
    counted = [r for r in runs if any(k.startswith("monitor/") for k in r.metrics)]
    events = {k: int(sum(r.metrics.get(f"monitor/{k}", 0) for r in counted)) for k in KINDS}
    with_events = [getattr(r, "short", r.seed) for r in counted  # (folds: `fold/seed`)
                   if any(r.metrics.get(f"monitor/{k}") for k in KINDS)]  # fmt: skip
    return {"overfitting": overfitting.over_seeds([r.diagnosis for r in runs]),
            "monitor": {"seeds": len(counted), "events": events,
                        "seeds_with_events": with_events},
            "errors": errors_over_seeds({getattr(r, "short", r.seed): getattr(r, "errors", None)
                                         for r in runs
                                         if getattr(r, "succeeded", True)})}  # fmt: skip


SHOWN = 12  # examples of each kind a report shows


def errors_over_seeds(records: dict[int, dict[str, Any] | None]) -> dict[str, Any]:
    """The test examples every seed got wrong (hard or mislabelled) and those only some did (the
    seed lottery), from the seeds' `errors/errors.json`, with the first few examples' inputs (a
    text, an image's pixels) as the seeds recorded them; {} without two records."""
    found = {seed: r for seed, r in records.items() if r and "wrong_indices" in r}
    if len(found) < 2:
        return {}
    n_test = next(iter(found.values()))["n"]
    out = errors.over_seeds({s: r["wrong_indices"] for s, r in found.items()}, n_test)
    seen: dict[int, dict[str, Any]] = {}
    for r in found.values():
        for w in r.get("wrong", []):
            seen.setdefault(w["index"], w)
    picked = out["always_wrong"][:SHOWN] + [d["index"] for d in out["sometimes_wrong"][:SHOWN]]
    out["examples"] = {str(i): {k: seen[i].get(k) for k in ("label", "predicted", "input")}
                       for i in picked if i in seen}  # fmt: skip
    out["labels"] = next(iter(found.values())).get("labels")
    out["sometimes_wrong"] = out["sometimes_wrong"][:50]  # (the report shows the first few)
    return out


def errors_sentence(view: dict[str, Any]) -> str | None:
    """`errors: 12 test examples (3.0%) every seed got wrong ...`; None without a view."""
    if not view:
        return None
    return (f"errors: {view['n_always']} test examples ({view['share_always']:.1%}) every seed "
            f"got wrong (hard or mislabelled), {view['n_sometimes']} "
            f"({view['share_sometimes']:.1%}) only some of the {view['n_seeds']} seeds did "
            f"(the seed lottery), {view['n_never']} none did")  # fmt: skip


def monitor_sentence(view: dict[str, Any]) -> str:
    """`monitor: 0 events over 5 seeds` or `monitor: 2 events (spike 1, grad 1) in seeds 3`."""
    if not view.get("seeds"):
        return (
            "monitor: no seed recorded events (runs older than xp's monitor, script "
            "projects' runs, or monitor.enabled=false)"
        )
    total = sum(view["events"].values())
    if not total:
        return f"monitor: no event over {view['seeds']} seeds"
    kinds = ", ".join(f"{k} {n}" for k, n in view["events"].items() if n)
    which = view["seeds_with_events"]
    seeds = f"seed{'s' if len(which) > 1 else ''} {', '.join(map(str, which))}"
    return f"monitor: {total} events ({kinds}) in {len(which)} of {view['seeds']} seeds ({seeds})"


def _num(x: Any, digits: int = 4) -> str:
    """A figure of a summary, whose JSON form turned NaN (one seed's interval) into null."""
    return "n/a" if x is None or x != x else f"{x:.{digits}f}"


def forgetting_sentence(stats: dict[str, Any]) -> str | None:
    """`forgetting: the pre-trained task's accuracy 0.9734 -> 0.8690 (drop 0.1043, 95% CI [...]);
    the backbone's features at CKA 0.862 ...`, from a repeat's statistics; None where nothing was
    measured."""

    def over_seeds(key: str) -> dict[str, Any]:
        d = stats.get(key, {}).get("successful", {})
        return d if d.get("n") else {}

    drop, cka, after = (over_seeds(f"retention/{k}") for k in ("drop", "cka", "accuracy"))
    start = over_seeds("retention/accuracy_before")
    parts = []
    if drop and after:
        parts.append(
            f"the pre-trained task's accuracy {_num(start.get('mean'))} -> {_num(after['mean'])} "
            f"(drop {_num(drop['mean'])}, 95% CI [{_num(drop.get('ci95_low'))}, "
            f"{_num(drop.get('ci95_high'))}])"
        )
    if cka:
        parts.append(f"the backbone's features at CKA {_num(cka['mean'], 3)} with the "
                     "pre-trained ones (1: unmoved)")  # fmt: skip
    return f"forgetting: {'; '.join(parts)}" if parts else None


def sentences(summary: dict[str, Any]) -> list[str]:
    """The diagnosis lines of a repeat's report and MLflow description."""
    found = summary.get("diagnosis")
    if not found:
        return []
    forgetting = forgetting_sentence(summary.get("stats", {}))
    wrong = errors_sentence(found.get("errors", {}))
    return [f"overfitting: {overfitting.sentence(found['overfitting'])}",
            monitor_sentence(found["monitor"]),
            *(line for line in (forgetting, wrong) if line)]  # fmt: skip
