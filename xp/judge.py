"""Judging a reproduction: each metric and the record compared, the verdict, its cause, and how
it is shown, and the statistical verdict's margin. Pure functions of records; running the
reproduction is `xp.reproduce`."""

from __future__ import annotations

import math
from typing import Any

from xp import XpError

IDENTICAL, WITHIN, DIFFERS = "identical", "within tolerance", "differs"
PASSING = (IDENTICAL, WITHIN, "equivalent")  # exit 0; differs, not equivalent, inconclusive: 1
RECORD_KEYS = ("xp.config_hash", "xp.git.commit", "xp.git.diff_md5")  # must come out equal


class ReproduceError(XpError):
    """A run that cannot be reproduced as asked (still running, not a repeat for --margin)."""


# -- comparing ----------------------------------------------------------------------------------
def compare_values(
    original: dict[str, float], reproduced: dict[str, float], tolerance: float, prefix: str = ""
) -> list[dict[str, Any]]:
    """One row per metric of the original: original, reproduced, difference, verdict."""
    rows = []
    for key in sorted(original):
        a, b = original[key], reproduced.get(key)
        if b is None:
            diff, verdict = None, DIFFERS
        elif a == b or (math.isnan(a) and math.isnan(b)):
            diff, verdict = 0.0, IDENTICAL
        else:
            diff = b - a
            verdict = WITHIN if abs(diff) <= tolerance else DIFFERS
        rows.append({"metric": prefix + key, "original": a, "reproduced": b, "diff": diff,
                     "verdict": verdict})  # fmt: skip
    return rows


def compare_record(original: dict[str, str], reproduced: dict[str, str]) -> list[str]:
    """Record names (config hash, commit, diff, data md5s) that came out different."""
    keys = [*RECORD_KEYS, *(k for k in original if k.startswith("xp.data.") and k.endswith(".md5"))]
    found = [f"{k}: {original.get(k)} -> {reproduced.get(k)}" for k in keys
             if original.get(k) != reproduced.get(k)]  # fmt: skip
    for key in sorted(k for k in original if k.startswith("xp.fingerprint.")):
        if reproduced.get(key) and reproduced[key] != original[key]:
            found.append(
                f"{key}: {original[key]} -> {reproduced[key]} (the same seed gave "
                f"another {key.rsplit('.', 1)[-1]}: seeding is not deterministic)"
            )
    return found


def environment_changes(original: dict[str, str], reproduced: dict[str, str]) -> list[str]:
    """`xp.env.*` tags that differ (other library versions or device): reported, not judged."""
    keys = sorted(k for k in {*original, *reproduced} if k.startswith("xp.env."))
    return [f"{k}: {original.get(k)} -> {reproduced.get(k)}" for k in keys
            if original.get(k) != reproduced.get(k)]  # fmt: skip


# what changes numerical results by design: kernels, their threads, the device, the library
NUMERICS_KEYS = ("xp.env.cpu", "xp.env.cpu_capability", "xp.env.numerics", "xp.env.threads",
                 "xp.env.numerics_env", "xp.env.torch", "xp.env.device", "xp.env.gpu",
                 "xp.env.cuda", "xp.env.cudnn")  # fmt: skip
# recorded since a later version: a record without them says nothing about them
LATER_KEYS = ("xp.env.threads", "xp.env.numerics_env")


def explain(verdict: str, original: dict[str, str], reproduced: dict[str, str],
            mismatches: list[str]) -> str | None:  # fmt: skip
    """Why a reproduction differs: `expected: <the environment that changed>` or `unexplained`.

    Same code, data, seeds and environment must give the same bits on a CPU; if they do not,
    that is a determinism bug, not bad luck.
    """
    if verdict != DIFFERS:
        return None
    if mismatches:
        return "expected: the record differs (" + "; ".join(mismatches) + ")"
    changed = [f"{k.removeprefix('xp.env.')} {original.get(k)} -> {reproduced.get(k)}"
               for k in NUMERICS_KEYS if original.get(k) != reproduced.get(k)
               and (k in original or k not in LATER_KEYS)]  # fmt: skip
    if changed:
        return "expected: " + "; ".join(changed)
    return "unexplained: same code, data, seeds and environment"


def overall(rows: list[dict[str, Any]], mismatches: list[str]) -> str:
    """`identical` when every row is, `differs` when any row (or the record) does."""
    if mismatches or not rows or any(r["verdict"] == DIFFERS for r in rows):
        return DIFFERS
    return IDENTICAL if all(r["verdict"] == IDENTICAL for r in rows) else WITHIN


def format_value(x: float | str | None) -> str:
    """A cell of the comparison: 6 significant digits, text as it is, `missing` for None."""
    if x is None:
        return "missing"
    return x if isinstance(x, str) else f"{x:.6g}"


def verdict_line(result: dict[str, Any]) -> str:
    """The verdict with its cause: `differs (expected: ...)`, `differs (unexplained: ...)`, or a
    statistical one: `equivalent (margin +-0.205 test/f1, the default: what 5 vs 5 seeds of sd
    0.083 can resolve; the tightest margin these seeds support: +-0.12; p=0.003; bits differ,
    expected: ...)`."""
    cause, eq = result.get("cause"), result.get("equivalence")
    if eq:
        bits = f"; bits differ, {cause}" if cause else ""
        more = f"; {eq['seeds_needed']} seeds per arm would settle it" if eq["seeds_needed"] else ""
        if eq.get("too_wide"):  # (a default wider than the metric's range: no verdict at all)
            more = "; that spans the metric's whole range: too few seeds to judge, give --margin"
        how = (f", the default: what {eq['n_a']} vs {eq['n_b']} seeds of sd {eq['sd_a']:.3g} can "
               "resolve" if eq["margin_default"] else "")  # fmt: skip
        return (f"{result['verdict']} (margin +-{eq['margin']:.4g} {eq['metric']}{how}; the "
                f"tightest margin these seeds support: +-{eq['bound']:.3g}; p={eq['p_value']:.3g}"
                f"{more}{bits})")  # fmt: skip
    return f"{result['verdict']} ({cause})" if cause else result["verdict"]


def to_markdown(result: dict[str, Any]) -> str:
    """The comparison as a Markdown table (logged as `reproduce/comparison.md`)."""
    lines = [f"# Reproduction of run {result['original']}", "",
             f"Verdict: **{verdict_line(result)}** (tolerance {result['tolerance']:g})", "",
             "| metric | original | reproduced | difference |", "|---|---|---|---|"]  # fmt: skip
    for r in result["rows"]:
        cells = [r["metric"], *(format_value(r[k]) for k in ("original", "reproduced", "diff"))]
        lines.append("| " + " | ".join(cells) + " |")
    for m in result["mismatches"]:
        lines.append(f"\nRecord differs: {m}")
    eq = result.get("equivalence")
    if eq:
        lines += ["", f"Equivalence of {eq['metric']} (two one-sided Welch tests, alpha "
                  f"{eq['alpha']:g}): difference {eq['diff']:.6g}, 90% interval "
                  f"[{eq['ci_low']:.6g}, {eq['ci_high']:.6g}], margin +-{eq['margin']:g}"
                  f"{' (default)' if eq['margin_default'] else ''}, p = {eq['p_value']:.4g}, "
                  f"n = {eq['n_a']} vs {eq['n_b']}: **{result['verdict']}**"]  # fmt: skip
        lines.append(f"Equivalence bound (the tightest margin these seeds support): "
                     f"+-{eq['bound']:.6g}")  # fmt: skip
        if eq.get("seeds_needed"):
            lines.append(f"Seeds per arm that would settle it: {eq['seeds_needed']}")
    return "\n".join(lines) + "\n"


def outcome_row(child: Any, new: Any, prefix: str) -> dict[str, Any]:
    a, b = child.data.tags.get("xp.outcome"), new.data.tags.get("xp.outcome")
    return {"metric": prefix + "outcome", "original": a, "reproduced": b,
            "diff": "" if a == b else "changed",
            "verdict": IDENTICAL if a == b else DIFFERS}  # fmt: skip


def one_cause(verdict: str, causes: dict[str, list[int]], repeat: bool) -> str | None:
    """The causes of the seeds that differ, in one line (an unexplained seed comes first)."""
    if verdict != DIFFERS:
        return None
    if not causes:  # the summary differs while every seed matched: cannot happen on one store
        return "unexplained: same code, data, seeds and environment"
    ordered = sorted(causes.items(), key=lambda kv: not kv[0].startswith("unexplained"))
    if not repeat or len(ordered) == 1:
        return ordered[0][0]
    return "; ".join(f"seeds {','.join(map(str, s))}: {c}" for c, s in ordered)


# -- the statistical verdict of a repeat: its margin and its unit ------------------------------
UNIT_METRICS = frozenset({"accuracy", "precision", "recall", "f1", "mean_token_accuracy"})


def spans_range(metric: str, values: list[float], margin: float) -> bool:
    """A margin of 1 or more on a metric that lies in [0, 1] (by its name, and its recorded values
    agree: a script may log a percentage under such a name): any two results are within it."""
    unit = metric.rsplit("/", 1)[-1] in UNIT_METRICS and all(0.0 <= v <= 1.0 for v in values)
    return unit and margin >= 1


def check_margin(margin: float | None, metric: str, children: list[Any]) -> None:
    """Refuse a margin as wide as the metric's whole range: every two results would be
    `equivalent` (checked before anything is recorded).

    Raises:
        ReproduceError: `metric` is a [0, 1] one (and its recorded values say so: a script may
            log a percentage under such a name) and `margin` >= 1.
    """
    values = [c.data.metrics[metric] for c in children if metric in c.data.metrics]
    if margin is not None and spans_range(metric, values, margin):
        raise ReproduceError(
            f"--margin {margin:g}: {metric} lies in [0, 1], so any two results are within "
            f"+-{margin:g} of each other; give a margin below 1 (e.g. 0.02), or none for the "
            "default"
        )


def check_default_margin(original: Any, children: list[Any], n_b: int) -> None:
    """Refuse, before anything runs, fresh seeds too few for the default margin to mean anything:
    one that spans a [0, 1] metric's whole range would call any two results `equivalent`.

    Raises:
        ReproduceError: the default margin these seeds resolve is >= 1 on a [0, 1] metric.
    """
    from xp.repeat import folds_of

    metric = original.data.tags.get("xp.metric", "test/f1")
    before = unit_values(children, metric, folds_of(original.data.tags))
    if len(before) < 2:
        return
    wide = default_margin(before, n_b)
    if spans_range(metric, before, wide):
        raise ReproduceError(
            f"{len(before)} recorded vs {n_b} fresh seeds resolve only +-{wide:.3g} {metric}, "
            "its whole range: any two results would be `equivalent`; give more --seeds, or a "
            "--margin"
        )


def default_margin(values: list[float], n_b: int) -> float:
    """The margin `values` (the original seeds) and `n_b` re-run seeds can resolve
    (`stats.resolvable_margin`): the one at which a perfect reproduction comes out `equivalent`
    with probability 0.8 (2.47 sd of the original at 5 vs 5 seeds, 1.48 sd at 10 vs 10).

    A default must be a margin the usual repeat can pass: half the original's sd, the default
    before, was never passed by a perfect 5-, 10- or 15-seed reproduction (TOST needs the whole
    90% interval of the difference inside the margin, and with a few seeds that interval alone is
    wider than a sd). It must also still catch a real change, and it does: at a true difference
    of the margin TOST says `equivalent` at most alpha (5%) of the time. Only the original's sd
    sets it (a noisy re-run cannot widen its own margin); it is wide with few seeds (0.2 macro-F1
    for 5 digits seeds of sd 0.083), so the verdict says how wide and what the seeds could have
    shown (the equivalence bound). Floored at 1e-4 for an original whose seeds are all equal."""
    from xp import stats

    return max(stats.resolvable_margin(values, n_b), 1e-4)


def unit_values(runs: list[Any], metric: str, folds: int | None) -> list[float]:
    """The values TOST compares, one per independent replicate: each seed's value, or in a folds
    repeat each seed's mean over its folds, for seeds with every fold (the folds are shared, the
    seeds are the draws)."""
    from xp.stats import seed_means
    from xp.summary import seed_runs, successful_values

    seeds = sorted({int(r.data.params.get("seed", 0)) for r in runs})
    values = successful_values(seed_runs(runs, seeds, folds), metric)
    return list(seed_means(values, range(folds)).values()) if folds else list(values.values())
