"""Promotion: a repeat's model enters the MLflow registry only when its gates pass.

A candidate is a repeat run (several seeds of one configuration). Five gates decide, each
recorded with its value and threshold in the version's `xp.gates` tag:

- `seeds`: at least `min_seeds` successful seeds report the metric;
- `failed_seeds`: at most `max_failed` seeds failed (diverged, no better than trivial, crashed);
- `provenance`: every seed recorded its commit, a dirty tree only with its diff, every data
  file's md5 with DVC status `clean`, and all seeds share the same code and data;
- `data_audit`: the share of test inputs that are also in the training split (the data audit
  every seed records, `xp.audit.leakage`) is at most `max_leakage` (default 0); seeds recorded
  without an audit pass only with `max_leakage` 1 (any leakage accepted);
- `beats_current`: a one-sided Welch test over the seeds of the alias's current holder has
  p < alpha (no holder: passes); refused outright when the two were tested on other test data.

What is registered is the model of the *representative* seed, the one whose metric is closest
to the group's median: the evidence is about the distribution of seeds, and the best seed of a
group is its luckiest draw, whose score a retrain would not reproduce (winner's curse). With
`--ensemble` (`xp.ensemble.promote`) it is every seed's model averaged into one, under a sixth
gate, `beats_representative`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from xp import XpError, stats
from xp.config import higher_is_better

DEFAULT_ALIAS = "champion"
PREVIOUS_ALIAS = "previous"  # the version the champion replaced: one command to roll back


class PromotionError(XpError):
    """A promotion that cannot be evaluated (not a repeat run, unknown metric, no model)."""


class PromotionRefused(XpError):
    """One or more gates failed; `gates` holds every gate with its value and threshold."""

    def __init__(self, name: str, gates: list[Gate]):
        self.gates = gates
        failed = [g for g in gates if not g.passed]
        lines = "; ".join(f"{g.name}: {g.value} (needs {g.threshold})" for g in failed)
        super().__init__(f"promotion to {name} refused by {len(failed)} gate(s): {lines}")


@dataclass
class Policy:
    """What a promotion demands: the alias it moves and the gates' thresholds."""

    alias: str = DEFAULT_ALIAS
    metric: str | None = None  # None: the repeat's own metric (`xp.metric`)
    min_seeds: int = 5
    alpha: float = 0.05  # one-sided, against the alias's current holder
    max_failed: int = 0
    max_leakage: float = 0.0  # the share of test inputs also in train a model may be trained on


@dataclass
class Gate:
    """One check of a promotion: what was measured, what was needed, whether it passed."""

    name: str
    passed: bool
    value: Any
    threshold: str


# -- the gates: pure functions of recorded values -----------------------------------------------
def seeds_gate(n_successful: int, min_seeds: int) -> Gate:
    """Enough successful seeds for the evidence to mean something."""
    return Gate("seeds", n_successful >= min_seeds, n_successful, f">= {min_seeds}")


def failed_gate(failed_seeds: list[int], max_failed: int) -> Gate:
    """A configuration that diverges on some seeds is not one to ship."""
    value = len(failed_seeds) if not failed_seeds else f"{len(failed_seeds)} ({failed_seeds})"
    return Gate("failed_seeds", len(failed_seeds) <= max_failed, value, f"<= {max_failed}")


def provenance_problems(runs: list[dict[str, Any]]) -> list[str]:
    """What is missing or inconsistent in the seeds' provenance (empty when complete).

    Args:
        runs: one dict per seed: {"seed", "tags", "has_diff" (a provenance/git.diff artifact)}.
    """
    problems = []
    for r in runs:
        tags, seed = r["tags"], r["seed"]
        if tags.get("xp.git.commit") in (None, "", "none"):
            problems.append(f"seed {seed}: no git commit recorded")
        if tags.get("xp.git.dirty") == "true" and not r["has_diff"]:
            problems.append(f"seed {seed}: dirty tree without its recorded diff")
        names = sorted(k[len("xp.data.") : -len(".path")] for k in tags
                       if k.startswith("xp.data.") and k.endswith(".path"))  # fmt: skip
        if not names:
            problems.append(f"seed {seed}: no data versions recorded")
        for name in names:
            if not tags.get(f"xp.data.{name}.md5"):
                problems.append(f"seed {seed}: no md5 recorded for data {name}")
            status = tags.get(f"xp.data.{name}.dvc_status")
            if status != "clean":
                problems.append(f"seed {seed}: data {name} was {status} against DVC")
    keys = {k for r in runs for k in r["tags"]  # (a fold's rows differ from fold to fold)
            if (k in ("xp.git.commit", "xp.git.diff_md5") or k.endswith(".md5"))
            and not k.startswith("xp.split.")}  # fmt: skip
    for key in sorted(keys):
        if len({r["tags"].get(key) for r in runs}) > 1:
            problems.append(f"seeds differ in {key}")
    return problems


def provenance_gate(runs: list[dict[str, Any]]) -> Gate:
    """The result can be re-run: code, diff and data versions recorded, clean and shared."""
    problems = provenance_problems(runs)
    value = "complete" if not problems else "; ".join(problems)
    threshold = "commit recorded, dirty only with its diff, every data md5 recorded and clean"
    return Gate("provenance", not problems, value, threshold)


def audit_gate(runs: list[dict[str, Any]], max_leakage: float) -> Gate:
    """The model was not trained on the test data (the seeds' data audits).

    Args:
        runs: one dict per seed: {"seed", "tags"}.
        max_leakage: the largest share of test inputs also in train that passes.
    """
    threshold = f"test inputs also in train <= {max_leakage:.1%}"
    missing = [r["seed"] for r in runs if "xp.audit.leakage" not in r["tags"]]
    if missing:
        why = next((r["tags"].get("xp.audit.findings", "") for r in runs if r["seed"] in missing),
                   "")  # fmt: skip
        why = why if why.startswith("not audited") else "recorded before xp audited data"
        value = f"seeds {', '.join(map(str, missing))} not audited ({why})"
        return Gate("data_audit", max_leakage >= 1, value, threshold + " (1: any, or unknown)")
    worst = max(runs, key=lambda r: float(r["tags"]["xp.audit.leakage"]))
    share = float(worst["tags"]["xp.audit.leakage"])
    count = worst["tags"].get("xp.audit.test_in_train", "?")
    value = "none" if share == 0 else f"{count} test inputs ({share:.1%}) also in train"
    return Gate("data_audit", share <= max_leakage, value, threshold)


def champion_gate(
    values: list[float],
    current: dict[str, Any] | None,
    metric: str,
    alpha: float,
    test_md5: str | None,
    group: str | None = None,
    design: str | None = None,
) -> tuple[Gate, float | None]:
    """Does the candidate beat the alias's current holder? Returns the gate and the p-value.

    Args:
        values: the candidate's per-seed metric values.
        current: None (no holder), or {"version", "group", "values", "test_md5"}.
        metric: the metric (its name gives the direction).
        alpha: one-sided significance level.
        test_md5: the md5 of the candidate's test data.
        group: the candidate's repeat run id (a group cannot beat itself).
        design: the candidate's split design (`xp.split.design` of a folds repeat), or None.
    """
    if current is None:
        return Gate("beats_current", True, "no current holder", f"p < {alpha}"), None
    where = f"version {current['version']}"
    if group is not None and current.get("group") == group:
        return Gate("beats_current", False, f"{where} is this group", "a new group"), None
    if current.get("test_md5") != test_md5:
        value = f"{where} was tested on other test data ({current.get('test_md5')} vs {test_md5})"
        return Gate("beats_current", False, value, "the same test data md5"), None
    if current.get("design") != design:  # (as `xp repeat --baseline`: one design against itself)
        said = {None: "the files' own split"}
        value = (f"{where} was measured on {said.get(current.get('design'), current.get('design'))}"
                 f", this repeat on {said.get(design, design)}")  # fmt: skip
        return Gate("beats_current", False, value, "the same split design"), None
    if len(values) < 2 or len(current["values"]) < 2:
        value = f"{len(values)} vs {len(current['values'])} seeds"
        return Gate("beats_current", False, value, "2 or more seeds on each side"), None
    better = "greater" if higher_is_better(metric) else "less"
    test = stats.welch_test(values, current["values"], alternative=better)
    p = float(test["p_value"])
    value = (f"p={p:.4g} (mean {np.mean(values):.4f} vs {np.mean(current['values']):.4f} of "
             f"{where}, n={len(values)} vs {len(current['values'])})")  # fmt: skip
    return Gate("beats_current", p < alpha, value, f"one-sided Welch p < {alpha}"), p


def seed_values(runs: list[Any], metric: str) -> dict[int, float]:
    """Seed -> metric over a repeat's successful runs; in a folds repeat each seed's mean over
    all its folds (a seed short of a fold is left out): the seeds are the independent draws,
    the folds are shared."""
    from xp.stats import seed_means
    from xp.summary import successful_values

    values = successful_values(runs, metric)
    folds = sorted({r.fold for r in runs if r.fold is not None})
    return seed_means(values, folds) if folds else values


def representative_seed(values: dict[Any, float]) -> Any:
    """The seed (a folds repeat's: the (fold, seed) run) whose value is closest to the median
    (ties: the smaller)."""
    median = float(np.median(list(values.values())))
    return min(values, key=lambda s: (round(abs(values[s] - median), 12), s))  # 0.9-0.8 < 0.1


# -- reading the evidence from the store --------------------------------------------------------
def _group(group_id: str) -> tuple[Any, list[Any], dict[str, Any]]:
    """The repeat run, its seeds' latest runs, and the children's MLflow runs by id."""
    from xp.record import track
    from xp.repeat import recorded_seed_runs

    parent = track.get_run(group_id)
    if parent.data.tags.get("xp.kind") != "repeat":
        kind = parent.data.tags.get("xp.kind")
        raise PromotionError(
            f"run {group_id} is a {kind} run, not a repeat run: promote the evidence of several "
            f"seeds (`xp repeat`), not a single run"
        )
    return parent, *recorded_seed_runs(parent)


def _current_holder(name: str, alias: str, metric: str) -> dict | None:
    """The version holding `alias`, with its group's values (or the ones recorded on it)."""
    import mlflow

    client = mlflow.MlflowClient()
    try:
        version = client.get_model_version_by_alias(name, alias)
    except Exception:  # no such model, or no version holds the alias
        return None
    tags = version.tags
    group = tags.get("xp.group")
    try:
        values = list(seed_values(_group(group)[1], metric).values())
    except XpError:  # the group is gone from this store: the values recorded on the version
        values = json.loads(tags.get("xp.values", "[]")) if tags.get("xp.metric") == metric else []
    return {"version": version.version, "group": group, "values": values,
            "test_md5": tags.get("xp.data.test.md5"),
            "design": tags.get("xp.split.design")}  # fmt: skip


def _has_diff(run_id: str) -> bool:
    import mlflow

    files = mlflow.MlflowClient().list_artifacts(run_id, "provenance")
    return any(f.path.endswith("git.diff") for f in files)


def evaluate(group_id: str, name: str, policy: Policy | None = None) -> dict[str, Any]:
    """Every gate of promoting a repeat run's model to `name@alias`, and the evidence.

    Returns:
        {"group", "name", "alias", "metric", "values" (seed -> value), "seed", "run_id"
        (the representative seed's run), "n", "mean", "ci95_low", "ci95_high", "p_value",
        "current" (the holder's version or None), "gates" (list of Gate), "passed", "tags"
        (the version's tags, for a passing promotion)}.

    Raises:
        PromotionError: not a repeat run, or no seed reports the metric.
        TrackingError: unknown run id.
    """
    from xp.summary import successful_values

    p = policy or Policy()
    alias, min_seeds, alpha, max_failed = p.alias, p.min_seeds, p.alpha, p.max_failed
    parent, runs, children = _group(group_id)
    metric = p.metric or parent.data.tags.get("xp.metric") or "test/f1"
    per_run = successful_values(runs, metric)  # seed, or (fold, seed) in a folds repeat
    values = seed_values(runs, metric)  # one value per seed: the independent draws
    if not any(metric in r.metrics for r in runs):
        known = sorted({k for r in runs for k in r.metrics if k.startswith("test/")})
        raise PromotionError(f"--metric {metric}: no seed of {group_id} has it; known: {known}")
    ptags = parent.data.tags
    failed = [r.seed for r in runs if not r.succeeded]
    recorded = [{"seed": r.seed, "tags": children[r.run_id].data.tags,
                 "has_diff": _has_diff(r.run_id)} for r in runs if r.run_id]  # fmt: skip
    test_md5 = ptags.get("xp.data.test.md5")
    current = _current_holder(name, alias, metric)
    beats, p_value = champion_gate(list(values.values()), current, metric, alpha, test_md5,
                                   group_id, ptags.get("xp.split.design"))  # fmt: skip
    gates = [seeds_gate(len(values), min_seeds), failed_gate(failed, max_failed),
             provenance_gate(recorded), audit_gate(recorded, p.max_leakage), beats]  # fmt: skip
    vals = list(values.values())
    low, high = _interval(runs, per_run, vals)
    key = representative_seed(per_run) if per_run else None  # (folds: the run nearest)
    run_id = next((r.run_id for r in runs if r.key == key), None)
    seed, fold = (key, None) if not isinstance(key, tuple) else (key[1], key[0])
    out = {
        "group": group_id, "name": name, "alias": alias, "metric": metric, "values": values,
        "seed": seed, "fold": fold, "run_id": run_id, "n": len(vals),
        "mean": float(np.mean(vals)) if vals else math.nan, "ci95_low": low, "ci95_high": high,
        "p_value": p_value, "current": current["version"] if current else None, "gates": gates,
        "passed": all(g.passed for g in gates),
    }  # fmt: skip
    out["tags"] = version_tags(out, ptags)
    return out


def version_tags(ev: dict[str, Any], parent_tags: dict[str, str]) -> dict[str, str]:
    """The RUN_SCHEMA tags of a registered version, plus `xp.seed` and `xp.values`."""
    tags = {
        "xp.group": ev["group"], "xp.run_id": ev["run_id"] or "", "xp.metric": ev["metric"],
        "xp.mean": _num(ev["mean"]), "xp.ci95_low": _num(ev["ci95_low"]),
        "xp.ci95_high": _num(ev["ci95_high"]), "xp.n": str(ev["n"]),
        "xp.p_value": _num(ev["p_value"]) if ev["p_value"] is not None else "none",
        "xp.git.commit": parent_tags.get("xp.git.commit", "none"),
        "xp.seed": str(ev["seed"]), "xp.values": json.dumps(list(ev["values"].values())),
        **({"xp.fold": str(ev["fold"])} if ev.get("fold") is not None else {}),
        "xp.gates": gates_json(ev["gates"]),
        "xp.project": parent_tags.get("xp.project", ""),
        "xp.config_hash": parent_tags.get("xp.config_hash", ""),
    }  # fmt: skip
    if ev.get("current"):
        tags["xp.replaces"] = str(ev["current"])
    if parent_tags.get("xp.split.design"):  # a folds repeat's: its design, as its challengers'
        tags["xp.split.design"] = parent_tags["xp.split.design"]
    if parent_tags.get("xp.study"):  # a search's confirmation repeat: the study it came from
        tags["xp.study"] = parent_tags["xp.study"]
    for k, v in parent_tags.items():
        if k.startswith("xp.data.") and k.endswith(".md5"):
            tags[k] = v
    return tags


def gates_json(gates: list[Gate]) -> str:
    """`xp.gates`: [{"gate", "value", "passed", "threshold"}, ...]."""
    return json.dumps([{"gate": g.name, "value": g.value, "passed": g.passed,
                        "threshold": g.threshold} for g in gates])  # fmt: skip


def _num(x: float) -> str:
    return "nan" if x is None or not math.isfinite(x) else f"{x:.6g}"


def _model_uri(run_id: str) -> str:
    """The logged model `model` of a training run (MLflow 3 logged models, or run artifacts)."""
    import mlflow

    run = mlflow.MlflowClient().get_run(run_id)
    models = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run_id}' AND name = 'model'",
        output_format="list",
    )
    if models:
        return f"models:/{models[0].model_id}"
    if any(a.path == "model" for a in mlflow.MlflowClient().list_artifacts(run_id)):
        return f"runs:/{run_id}/model"
    raise PromotionError(f"run {run_id} has no logged model named 'model' to register")


def promote(
    group_id: str, name: str, policy: Policy | None = None, dry_run: bool = False
) -> dict[str, Any]:
    """Register the representative seed's model as a new version of `name` and move `alias`.

    Nothing in the registry changes unless every gate passes (and never with `dry_run`). The
    version that held the alias gets the alias `previous` (`<alias>-previous` for another alias).

    Returns:
        The evaluation (see `evaluate`) with "version" (None for a dry run) and "model_uri".

    Raises:
        PromotionRefused: a gate failed (the registry is untouched).
        PromotionError, TrackingError: see `evaluate`; a seed without a logged model.
    """
    ev = evaluate(group_id, name, policy)
    ev["version"], ev["model_uri"] = None, None
    if not ev["passed"] and not dry_run:
        raise PromotionRefused(name, ev["gates"])
    if ev["passed"]:
        ev["model_uri"] = _model_uri(ev["run_id"])
    if dry_run:
        return ev
    ev["version"] = register(ev, ev["run_id"], _describe(ev))
    return ev


def register(ev: dict[str, Any], run_id: str, description: str) -> str:
    """Register `ev["model_uri"]` as a new version of `ev["name"]` with `ev["tags"]`, move the
    alias (its holder becomes `previous`), tag the repeat run `xp.promoted`; returns the version.

    Args:
        ev: a passing evaluation (see `evaluate`) with its "model_uri".
        run_id: the run whose model it is (a seed's, or the repeat's for an ensemble).
        description: the version's description.
    """
    import mlflow

    name, alias = ev["name"], ev["alias"]
    client = mlflow.MlflowClient()
    try:
        client.get_registered_model(name)
    except Exception:
        client.create_registered_model(
            name, description="Promoted by `xp promote`: every version carries its evidence."
        )
    logged = (
        ev["model_uri"].removeprefix("models:/") if ev["model_uri"].startswith("models:/") else None
    )  # a server wants the logged model named as well as its URI
    version = client.create_model_version(
        name, ev["model_uri"], run_id=run_id, tags=ev["tags"], description=description,
        model_id=logged,
    )  # fmt: skip
    client.set_registered_model_alias(name, alias, version.version)
    if ev["current"]:
        previous = PREVIOUS_ALIAS if alias == DEFAULT_ALIAS else f"{alias}-{PREVIOUS_ALIAS}"
        client.set_registered_model_alias(name, previous, ev["current"])
    client.set_tag(ev["group"], "xp.promoted", f"{name}/{version.version}")
    return version.version


def _interval(runs: list[Any], per_run: dict[Any, float], vals: list[float]) -> tuple:
    """The 95% interval of the mean: Student's t over seeds, or over folds x seeds both sources
    of chance (`stats.folds_interval`, as the repeat's own summary gives it)."""
    from xp.summary import split_ratio

    ratio = split_ratio(runs) if any(r.fold is not None for r in runs) else None
    if ratio is not None:
        return stats.folds_interval(per_run, ratio)
    return stats.t_interval(vals) if len(vals) > 1 else (math.nan, math.nan)


def _on_fold(ev: dict[str, Any]) -> str:
    return f" on fold {ev['fold']}" if ev.get("fold") is not None else ""


def _describe(ev: dict[str, Any]) -> str:
    line = (f"{ev['metric']} {ev['mean']:.4f}, 95% CI [{ev['ci95_low']:.4f}, "
            f"{ev['ci95_high']:.4f}] over {ev['n']} seeds (repeat run {ev['group']}); weights of "
            f"seed {ev['seed']}{_on_fold(ev)} (run {ev['run_id']}), the one closest to the "
            "median")  # fmt: skip
    if ev["current"]:
        line += f"; beats version {ev['current']} (one-sided Welch p={ev['p_value']:.3g})"
    return line + "."
