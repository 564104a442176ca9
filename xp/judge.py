"""Judging a reproduction: each metric and the record compared, the verdict, its cause, and how
it is shown. Pure functions of two records; running the reproduction is `xp.reproduce`."""

from __future__ import annotations

import math
from typing import Any

IDENTICAL, WITHIN, DIFFERS = "identical", "within tolerance", "differs"
PASSING = (IDENTICAL, WITHIN, "equivalent")  # exit 0; differs, not equivalent, inconclusive: 1
RECORD_KEYS = ("xp.config_hash", "xp.git.commit", "xp.git.diff_md5")  # must come out equal


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
