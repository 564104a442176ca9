"""Rank configurations by their seed distributions: fetch runs, group, rank with uncertainty.

Returns data and prints nothing. Training runs are grouped by `xp.config_hash` (all seeds of one
configuration, however they were started) and by the md5 of their test data: groups tested on
different data are ranked separately, never against each other.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from typing import Any

from xp import XpError, stats
from xp.config import EXECUTION_KEYS, higher_is_better

SUCCESS = ("ok", "early_stopped")
SEED_SUFFIX = re.compile(r"( f\d+)? s\d+$")  # a training run's name ends with its (fold and) seed
# how a run was executed or watched, not what it trained: never what tells configurations apart
EXECUTION = {f"{section}.{key}" for section, keys in EXECUTION_KEYS.items() for key in keys}


class CompareError(XpError):
    """Nothing to compare, or an unknown experiment."""


# what ranking reads of a run (everything else a run carries stays in the store): its group
# (config hash, test data, split design), outcome, name, fold and seed, what it says of itself
WANT_TAGS = ("xp.config_hash", "xp.data.test.md5", "xp.outcome", "xp.audit.leakage",
             "xp.diagnosis.overfitting", "mlflow.runName", "xp.reproduces")  # fmt: skip
WANT_METRICS = ("retention/drop", "retention/cka")


def fetch_runs(
    project: str | None = None,
    experiment: str | None = None,
    filter_string: str | None = None,
    metric: str | None = None,
    warn: Any = None,
) -> list[Any]:
    """Training runs (`xp.kind = train`) of a project and/or experiment, all pages.

    Reproductions (`xp.reproduces`) are left out: a re-run of the same seed is not another seed,
    and counting it would shrink every interval for nothing. With `metric`, a SQL store or an
    xp server is read narrowly (`xp.record.narrow`: what `rank_groups` reads of each run, same
    runs, same order); otherwise, or where that read does not know the store's schema (then
    `warn` gets one line), through MLflow's `search_runs`.

    Raises:
        CompareError: the experiment does not exist.
    """
    import mlflow

    from xp.record import narrow, track

    clauses = ["tags.`xp.kind` = 'train'"]
    if project:
        clauses.append(f"tags.`xp.project` = '{project}'")
    if filter_string:
        clauses.append(filter_string)
    where = " and ".join(clauses)
    experiment_ids = None
    if experiment:
        client = mlflow.MlflowClient()
        try:
            exp = client.get_experiment_by_name(experiment)
            if exp is None and experiment.isdigit():
                exp = client.get_experiment(experiment)
        except mlflow.MlflowException as e:
            if e.error_code != "PERMISSION_DENIED":
                raise
            raise CompareError(f"the tracking server refused experiment {experiment!r} (403 "
                               "forbidden): ask its owner for READ") from None  # fmt: skip
        if exp is None:
            raise CompareError(f"unknown experiment {experiment!r}")
        experiment_ids = [exp.experiment_id]
    runs = None
    if metric is not None:
        want = narrow.Want(tags=WANT_TAGS, tag_prefixes=("xp.split.",),
                           metrics=(metric, *WANT_METRICS), metric_prefixes=("monitor/",),
                           params=("seed", "seed.split", "project"))  # fmt: skip
        try:
            runs = narrow.fetch(experiment_ids, where, want)
        except narrow.Unsupported as e:
            if warn is not None:
                warn(f"{e}: reading every run through MLflow's search_runs instead (slower)")
    if runs is None:
        runs = track.search_runs(where, experiment_ids)
    return [r for r in runs if "xp.reproduces" not in r.data.tags]


def _value(run: Any, metric: str) -> float | None:
    v = run.data.metrics.get(metric)
    return v if v is not None and math.isfinite(v) else None


def differing_params(groups: dict[Any, list[Any]]) -> dict[Any, dict[str, str]]:
    """For each group, the params whose values differ across the groups (seeds left out).

    Configurations of different projects (xp's trainer against a script, say) are told apart by
    their project: then only `project` and the keys that differ within that project are shown.
    """
    from xp.record.narrow import prefetch_params

    prefetch_params([runs[0] for runs in groups.values()])  # (narrowly read runs: one query)
    reps = {key: runs[0].data.params for key, runs in groups.items()}
    by_project: dict[Any, dict[Any, dict[str, str]]] = {}
    for key, params in reps.items():
        by_project.setdefault(params.get("project"), {})[key] = params
    out = {}
    for project, members in by_project.items():
        keys = set().union(*(p.keys() for p in members.values()))
        keys = {k for k in keys if k != "seed" and not k.startswith(("seed.", "data.resplit."))
                and k not in EXECUTION}  # fmt: skip
        differ = sorted(k for k in keys if len({p.get(k) for p in members.values()}) > 1)
        for key, params in members.items():
            cell = {"project": project or ""} if len(by_project) > 1 else {}
            out[key] = {**cell, **{k: params.get(k, "") for k in differ}}
    return out


def label(runs: list[Any], params: dict[str, str], fallback: str) -> str:
    """A group's readable name: its runs' own name without the seed (`digits layer_decay=0.7`:
    the project and what differs from its config.yaml), else what differs between the groups as
    `key=value`, each key cut to its last part where that is unambiguous."""
    own = [getattr(r.info, "run_name", None) or r.data.tags.get("mlflow.runName", "") for r in runs]
    # (only xp's own names: a run recorded before them has a name MLflow made up)
    names = Counter(SEED_SUFFIX.sub("", name) for name in own if SEED_SUFFIX.search(name))
    if names:
        return names.most_common(1)[0][0]
    last = [k.rsplit(".", 1)[-1] for k in params]
    words = [f"{k if last.count(s) > 1 or k == 'project' else s}={v}"
             for (k, v), s in zip(params.items(), last, strict=True)]  # fmt: skip
    words = [w.removeprefix("project=") for w in words]
    return " ".join(words) or fallback


def _diagnosis(runs: list[Any]) -> dict[str, Any]:
    """What the group's runs say of themselves: seeds that overfit (of those diagnosed), monitor
    events, forgetting (means over the runs that measured it)."""
    diagnosed = [r.data.tags.get("xp.diagnosis.overfitting") for r in runs]
    known = [d for d in diagnosed if d and not d.startswith("unknown")]
    events = [sum(v for k, v in r.data.metrics.items() if k.startswith("monitor/")) for r in runs
              if any(k.startswith("monitor/") for k in r.data.metrics)]  # fmt: skip

    def mean(key: str) -> float | None:
        found = [_value(r, key) for r in runs]
        found = [v for v in found if v is not None]
        return sum(found) / len(found) if found else None

    return {"overfit_seeds": sum(d != "none" for d in known) if known else None,
            "diagnosed_seeds": len(known),
            "monitor_events": int(sum(events)) if events else None,
            "retention_drop": mean("retention/drop"),
            "retention_cka": mean("retention/cka")}  # fmt: skip


def _rank_partition(groups: list[dict[str, Any]], better_high: bool, alpha: float) -> None:
    """Rank groups (in place) against the top group: Welch one-sided, Holm-adjusted, ties."""
    sign = 1 if better_high else -1
    rankable = [g for g in groups if g["n"] >= 2]
    if not rankable:
        return
    rankable.sort(key=lambda g: -sign * g["mean"])
    top = rankable[0]
    others = rankable[1:]
    pvals = [_p_vs_top(top, g, better_high) for g in others]
    adjusted = stats.holm(pvals, alpha) if pvals else {"reject": [], "p_adjusted": []}
    top.update(p_value_vs_top=None, tied_with_top=True, prob_better_than_top=None)
    for g, p, reject in zip(others, adjusted["p_adjusted"], adjusted["reject"]):
        g["p_value_vs_top"] = float(p)
        g["tied_with_top"] = not reject
        prob = stats.prob_improvement(g["_values"], top["_values"])
        g["prob_better_than_top"] = prob if better_high else 1 - prob
    rank = 1
    for i, g in enumerate(rankable):
        if g["tied_with_top"]:
            g["rank"] = 1
        else:
            rank = max(rank, i + 1)
            g["rank"] = rank


def _p_vs_top(top: dict[str, Any], g: dict[str, Any], better_high: bool) -> float:
    """One-sided p that the top group beats `g`: Welch over seeds, or for the same folds the
    larger of Welch over seeds' means and the corrected resampled t-test paired by fold."""
    if top["_by_split"] is None:
        alternative = "greater" if better_high else "less"
        return stats.welch_test(top["_values"], g["_values"], alternative)["p_value"]
    try:
        cmp = stats.compare_folds(top["_by_split"], g["_by_split"], top["_ratio"], better_high)
    except ValueError:  # (fewer than 2 folds in common: no paired evidence)
        return 1.0
    return cmp[cmp["test"]]["p_value"]


def _design(run: Any) -> str:
    """The split design a run trained under (`kfold5/seed 1`), or "" for the files' own split."""
    from xp.train.folds import design

    tags = run.data.tags
    if "xp.split.kind" not in tags:
        return ""
    return design(tags["xp.split.kind"], int(tags["xp.split.count"]),
                  int(run.data.params.get("seed.split", 0)))  # fmt: skip


def _by_split(runs: list[Any], metric: str) -> dict[tuple[int, int], float]:
    return {(int(r.data.tags["xp.split.index"]), int(r.data.params.get("seed", 0))):
            _value(r, metric) for r in runs}  # fmt: skip


def _ratio(runs: list[Any]) -> float:
    """n_validation / n_train of the folds' runs (the corrected t-test's ratio)."""
    ratios = [int(r.data.tags["xp.split.n_validation"]) / int(r.data.tags["xp.split.n_train"])
              for r in runs if "xp.split.n_train" in r.data.tags]  # fmt: skip
    return sum(ratios) / len(ratios) if ratios else 0.0


def rank_groups(runs: list[Any], metric: str, alpha: float = 0.05) -> dict[str, Any]:
    """Group training runs by configuration and test data, and rank them with uncertainty.

    Args:
        runs: MLflow runs of training jobs.
        metric: the metric to rank by (direction from its name).
        alpha: family-wise error rate of the Holm-adjusted comparisons with the top group.

    Returns:
        {"metric", "higher_is_better", "groups": [...], "warnings": [...], "n_runs",
        "n_failed"}; each group has rank, config_hash, test_md5, n, mean, std, ci95_low,
        ci95_high, p_value_vs_top, tied_with_top, prob_better_than_top, params, failed,
        no_uncertainty, run_ids, leakage (the data audit's share of test inputs also in
        train). Groups are sorted by partition, then rank.

    Raises:
        CompareError: no run reports the metric.
    """
    better_high = higher_is_better(metric)
    by_key: dict[tuple[str, str, str], list[Any]] = defaultdict(list)
    failed: dict[tuple[str, str, str], int] = defaultdict(int)
    for run in runs:
        tags = run.data.tags
        key = (tags.get("xp.config_hash", "?"), tags.get("xp.data.test.md5", "?"), _design(run))
        if tags.get("xp.outcome") in SUCCESS and _value(run, metric) is not None:
            by_key[key].append(run)
        else:
            failed[key] += 1
    if not by_key:
        raise CompareError(f"no successful training run reports {metric} among {len(runs)} runs")
    params = differing_params(by_key)
    groups = []
    for key, members in by_key.items():
        values = [_value(r, metric) for r in members]
        d = stats.describe(values)
        low, high = stats.t_interval(values) if len(values) >= 2 else (None, None)
        by_split = _by_split(members, metric) if key[2] else None
        ratio = _ratio(members)
        if by_split is not None:  # folds: the seeds' spread and the folds' (shared rows corrected)
            low, high = stats.folds_interval(by_split, ratio)
            low, high = (None, None) if math.isnan(low) else (low, high)
        groups.append({
            "rank": None, "config_hash": key[0], "test_md5": key[1], "n": len(values),
            "design": key[2] or None, "_by_split": by_split, "_ratio": ratio,
            "mean": d["mean"], "std": d["std"] if len(values) >= 2 else None,
            "ci95_low": low, "ci95_high": high, "p_value_vs_top": None, "tied_with_top": False,
            "prob_better_than_top": None, "params": params[key], "failed": failed.get(key, 0),
            "no_uncertainty": len(values) < 2, "run_ids": [r.info.run_id for r in members],
            "leakage": _leakage(members), "label": label(members, params[key], key[0][:8]),
            **_diagnosis(members), "_values": values,
        })  # fmt: skip
    # two groups of one name: config.yaml changed between them (the hash tells them apart), or
    # one configuration tested on two test sets (the test data's md5 does)
    by_label: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for g in groups:
        by_label[g["label"]].append(g)
    for same in (s for s in by_label.values() if len(s) > 1):
        hashes = Counter(g["config_hash"] for g in same)
        for g in same:
            parts = [g["config_hash"][:8]] if len(hashes) > 1 else []
            if len({x["test_md5"] for x in same if x["config_hash"] == g["config_hash"]}) > 1:
                parts.append(f"test {g['test_md5'][:8]}")
            if len({x["design"] for x in same}) > 1:  # (one configuration, with folds and without)
                parts.append(g["design"] or "own split")
            g["label"] += f" ({', '.join(parts)})"
    partitions = sorted({(g["test_md5"], g["design"] or "") for g in groups})
    warnings = []
    tests = {md5 for md5, _ in partitions}
    if len(tests) > 1:
        warnings.append(
            f"test data differs between runs ({len(tests)} test md5s): configurations are "
            "ranked within each test set only; a better score on other data proves nothing"
        )
    if len({design for _, design in partitions}) > 1:
        warnings.append(
            "runs were trained on different split designs (the files' own split, or folds of "
            "`xp repeat --folds`): configurations are ranked within each design only, folds "
            "paired by fold"
        )
    for part in partitions:
        members = [g for g in groups if (g["test_md5"], g["design"] or "") == part]
        _rank_partition(members, better_high, alpha)
    single = sum(g["no_uncertainty"] for g in groups)
    if single:
        warnings.append(
            f"{single} configuration(s) have one run: listed, not ranked (no uncertainty)"
        )
    for g in groups:
        if g["leakage"]:
            warnings.append(
                f"configuration {g['label']}: trained on splits where {g['leakage']:.1%} of "
                "the test inputs are also in train (data audit): its score is not a test score"
            )
    for key, n in failed.items():  # configurations whose every run failed still show up
        if key not in by_key:
            warnings.append(f"configuration {key[0]}: all {n} runs failed or lack {metric}")
    sign = 1 if better_high else -1
    groups.sort(key=lambda g: (partitions.index((g["test_md5"], g["design"] or "")),
                               g["rank"] is None, g["rank"] or 0, -sign * g["mean"]))  # fmt: skip
    for g in groups:
        del g["_values"], g["_by_split"], g["_ratio"]
    return {
        "metric": metric, "higher_is_better": better_high, "alpha": alpha, "groups": groups,
        "warnings": warnings, "n_runs": len(runs), "n_failed": sum(failed.values()),
    }  # fmt: skip


JSON_FIELDS = (
    "rank", "label", "config_hash", "design", "n", "mean", "std", "ci95_low", "ci95_high",
    "p_value_vs_top", "tied_with_top", "prob_better_than_top", "params", "failed", "leakage",
    "overfit_seeds", "diagnosed_seeds", "monitor_events", "retention_drop", "retention_cka",
)  # fmt: skip


def _leakage(runs: list[Any]) -> float | None:
    """The largest share of test inputs also in train over a group's runs (their data audits);
    None where no run was audited."""
    found = [float(r.data.tags["xp.audit.leakage"]) for r in runs
             if "xp.audit.leakage" in r.data.tags]  # fmt: skip
    return max(found) if found else None


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e-3 and v != 0 else f"{v:.4f}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={val}" for k, val in v.items())
    return str(v)


NARROW = ("rank", "configuration", "n", "mean", "95% CI", "p vs top (Holm)", "tied")


def table_rows(result: dict[str, Any], wide: bool = True) -> list[list[str]]:
    """Header + one row per group (the terminal table, markdown and csv). Narrow (the terminal's
    default): the group's name, its mean and interval and how it ranks; wide adds the spread,
    the failures, the hash, and what the runs say of themselves (leakage, overfitting, monitor
    events, forgetting)."""
    head = ["rank", "configuration", "n", "mean", "std", "95% CI", "p vs top (Holm)", "tied",
            "P(better than top)", "failed", "leakage", "overfit seeds", "monitor events",
            "retention drop", "CKA", "config_hash", "differs"]  # fmt: skip
    rows = [head]
    for g in result["groups"]:
        ci = "" if g["ci95_low"] is None else f"[{_cell(g['ci95_low'])}, {_cell(g['ci95_high'])}]"
        rank = "unranked" if g["no_uncertainty"] else _cell(g["rank"])
        overfit = g.get("overfit_seeds")
        rows.append([
            rank, g.get("label") or g["config_hash"], str(g["n"]), _cell(g["mean"]),
            _cell(g["std"]), ci, _cell(g["p_value_vs_top"]), _cell(g["tied_with_top"]),
            _cell(g["prob_better_than_top"]), str(g["failed"]),
            "" if g.get("leakage") is None else f"{g['leakage']:.1%}",
            "" if overfit is None else f"{overfit} of {g['diagnosed_seeds']}",
            _cell(g.get("monitor_events")), _cell(g.get("retention_drop")),
            _cell(g.get("retention_cka")), g["config_hash"], _cell(g["params"]),
        ])  # fmt: skip
    if wide:
        return rows
    keep = [head.index(c) for c in NARROW]
    return [[r[i] for i in keep] for r in rows]


def render(result: dict[str, Any], fmt: str) -> str:
    """The ranking as markdown, csv or json (the terminal table is drawn by the CLI)."""
    import json

    if fmt == "json":
        out = [
            {k: g[k] for k in (*JSON_FIELDS, "test_md5", "no_uncertainty")}
            for g in result["groups"]
        ]
        return json.dumps({"metric": result["metric"], "groups": out,
                           "warnings": result["warnings"]}, indent=2)  # fmt: skip
    rows = table_rows(result)
    if fmt == "csv":
        import csv
        import io

        buf = io.StringIO()
        csv.writer(buf).writerows(rows)
        return buf.getvalue()
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    lines += [f"\n> {w}" for w in result["warnings"]]
    return "\n".join(lines) + "\n"


def check_plot_path(out: str) -> None:
    """Refuse, before any work, a plot path that cannot be written.

    Raises:
        CompareError: the folder is missing or not writable, or matplotlib has no such format.
    """
    import os
    from pathlib import Path

    from xp.report import pyplot

    path = Path(out)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise CompareError(f"--plot {out}: is a folder; give a file name such as forest.png")
    if not folder.is_dir():
        raise CompareError(f"--plot {out}: folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise CompareError(f"--plot {out}: {folder} is not writable")
    kinds = pyplot().figure().canvas.get_supported_filetypes()
    ext = path.suffix.lstrip(".").lower()
    if ext not in kinds:
        raise CompareError(
            f"--plot {out}: unknown image format {path.suffix or '(none)'!r}; use one of "
            + ", ".join(f".{k}" for k in sorted(kinds))
        )


def forest_plot(result: dict[str, Any], out: str) -> None:
    """Means with 95% intervals, one line per configuration (best at the top)."""
    from xp.report import pyplot

    plt = pyplot()

    groups = result["groups"]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(groups) + 1.5))
    for i, g in enumerate(groups):
        y = len(groups) - i
        color = "C0" if g["tied_with_top"] else ("C7" if g["no_uncertainty"] else "C3")
        if g["ci95_low"] is not None:
            ax.plot([g["ci95_low"], g["ci95_high"]], [y, y], color=color, lw=2)
        ax.plot([g["mean"]], [y], "o", color=color)
    labels = [f"{g.get('label') or g['config_hash'][:8]} (n={g['n']})" for g in groups]
    ax.set_yticks(range(len(groups), 0, -1), labels)
    ax.set_xlabel(f"{result['metric']} (mean, 95% CI; blue: tied with the top)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
