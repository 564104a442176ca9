"""A repeat's seeds as one model: their test answers averaged, measured against the seed that
`xp promote` would register, and promoted as one pyfunc model.

Every seed of xp's trainer records its kept checkpoint's test answers (`predictions/test.npz`:
class probabilities, or values for regression). `evaluate` averages them over a repeat's seeds
and measures the average with the trainer's own metric function. The representative seed (the
one closest to the seeds' median, `xp.registry.representative_seed`) is its reference: one
bootstrap over test examples resamples the same examples for both (paired), which gives the
ensemble's interval, the representative's, the difference's, and a one-sided p-value that the
ensemble is better. `promote` registers the ensemble (`xp.train.served.SeedEnsemble`) when
`xp promote`'s five gates pass and a sixth, `beats_representative` (that p < alpha), does too.

The unit here is the test example, not the seed: the interval says how sure one can be that
these trained models, averaged, beat this one on data like the test set, not how another
repeat's ensemble would do.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from xp import XpError
from xp.config import higher_is_better

RESAMPLES = 1000  # resamples of the test examples: ~2 x 2.5 ms each (sklearn's metrics, 396 rows)
RNG_SEED = 0  # one fixed generator: the same evidence gives the same interval and p, every time
TOLERANCE = 1e-6  # a seed's recomputed metric against the one it recorded
TASK_METRICS = {"classification": ("accuracy", "precision", "recall", "f1"),
                "regression": ("mae", "rmse")}  # fmt: skip
PREDICTIONS = "predictions/test.npz"  # (xp.train.evaluation.PREDICTIONS, without torch)


class EnsembleError(XpError):
    """An ensemble that cannot be measured or registered: not a repeat, failed or missing seeds,
    other test data, no recorded predictions, predictions that are not what was measured."""


# -- pure functions of the answers ----------------------------------------------------------------
def decisions(task: str, answers: np.ndarray) -> np.ndarray:
    """What a metric is computed on: the class a model picks, or its value (regression)."""
    return answers.argmax(-1) if task == "classification" else answers


def metrics_of(task: str, labels: np.ndarray, answers: np.ndarray) -> dict[str, float]:
    """The task metrics of one model's test answers, with the function the trainer uses."""
    from xp.train.metrics import task_metrics

    return task_metrics(task, labels, decisions(task, answers))


def paired_bootstrap(
    task: str,
    metric: str,
    labels: np.ndarray,
    ensemble: np.ndarray,
    reference: np.ndarray,
    resamples: int = RESAMPLES,
    seed: int = RNG_SEED,
) -> dict[str, Any]:
    """The ensemble against a reference model on the same test examples, resampled together.

    Args:
        task: `classification` or `regression`.
        metric: a task metric (`f1`, `accuracy`, ..., `mae`, `rmse`); macro F1 is not a mean over
            examples, so the examples' indices are resampled and the metric recomputed.
        labels: the test labels [n].
        ensemble, reference: each model's answers, probabilities [n, classes] or values [n].
        resamples: bootstrap resamples.
        seed: the generator's seed.

    Returns:
        {"ensemble", "reference", "diff" (ensemble - reference), each with "<name>_ci" (the 95%
        percentile interval), "p_value" (one-sided: the share of resamples where the ensemble
        is not better, (k + 1) / (resamples + 1)), "resamples"}.
    """
    from scipy import stats

    def stat(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        mine, theirs = task_value(task, metric, y, a), task_value(task, metric, y, b)
        return np.array([mine, theirs, mine - theirs])

    ours, theirs = decisions(task, ensemble), decisions(task, reference)
    point = stat(labels, ours, theirs)
    res = stats.bootstrap((labels, ours, theirs), stat, paired=True, vectorized=False,
                          n_resamples=resamples, method="percentile", confidence_level=0.95,
                          rng=np.random.default_rng(seed))  # fmt: skip
    diffs = res.bootstrap_distribution[2]
    not_better = diffs <= 0 if higher_is_better(metric) else diffs >= 0
    low, high = res.confidence_interval
    out: dict[str, Any] = {"resamples": resamples}
    for i, name in enumerate(("ensemble", "reference", "diff")):
        out[name], out[f"{name}_ci"] = float(point[i]), [float(low[i]), float(high[i])]
    out["p_value"] = float((not_better.sum() + 1) / (resamples + 1))
    return out


def task_value(task: str, metric: str, labels: np.ndarray, decided: np.ndarray) -> float:
    """One task metric of decided answers (classes or values)."""
    from xp.train.metrics import task_metrics

    return task_metrics(task, labels, decided)[metric]


def check_recorded(seed: int, task: str, labels: np.ndarray, answers: np.ndarray,
                   recorded: dict[str, float]) -> None:  # fmt: skip
    """The answers a seed recorded give the test metrics it recorded (else they are not what
    was measured)."""
    for name, value in metrics_of(task, labels, answers).items():
        was = recorded.get(f"test/{name}")
        if was is not None and abs(was - value) > TOLERANCE:
            raise EnsembleError(
                f"seed {seed}: its recorded test predictions give test/{name}={value:.6f}, but "
                f"the run recorded {was:.6f}: {PREDICTIONS} is not what was measured"
            )


# -- reading a repeat's seeds ---------------------------------------------------------------------
def _repeat(group_id: str) -> tuple[Any, list[Any], dict[str, Any]]:
    from xp.record import track
    from xp.repeat import recorded_seed_runs

    parent = track.get_run(group_id)
    kind = parent.data.tags.get("xp.kind")
    if kind != "repeat":
        raise EnsembleError(f"run {group_id} is a {kind} run, not a repeat run: an ensemble "
                            f"averages the seeds of `xp repeat`")  # fmt: skip
    return parent, *recorded_seed_runs(parent)


def _answers(run_id: str, seed: int, group_id: str, where: Path) -> dict[str, np.ndarray]:
    import mlflow

    if not mlflow.MlflowClient().list_artifacts(run_id, PREDICTIONS.rsplit("/", 1)[0]):
        raise EnsembleError(
            f"seed {seed} (run {run_id}) recorded no test predictions ({PREDICTIONS}): it was "
            f"trained before xp kept them, or not by xp's trainer; re-run the seeds "
            f"(`xp reproduce {group_id}` trains them again into a repeat that has them)"
        )
    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=PREDICTIONS,
                                               dst_path=str(where / str(seed)))  # fmt: skip
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def read_seeds(group_id: str, metric: str | None) -> dict[str, Any]:
    """A repeat's seeds and their recorded test answers, checked to form one ensemble.

    Returns:
        {"parent", "metric" (`test/<m>`), "task", "labels", "test_md5", "seeds" (seed ->
        {"run_id", "answers", "metrics"})}.

    Raises:
        EnsembleError: not a repeat; a seed failed, crashed or is missing; fewer than 2 seeds;
            seeds tested on other data (md5) or other labels; no recorded predictions;
            predictions that do not give the recorded metrics; a metric an ensemble cannot have.
    """
    parent, runs, children = _repeat(group_id)
    bad = [f"{r.seed} ({r.outcome})" for r in runs if not r.succeeded]
    if bad:
        raise EnsembleError(
            f"repeat {group_id}: seed(s) {', '.join(bad)} did not succeed: "
            f"an ensemble averages every seed; resume or re-run the repeat"
        )
    if len({r.seed for r in runs}) < len(runs):  # (a repeat over splits: a run per seed and fold)
        raise EnsembleError(f"repeat {group_id} trained each seed on several splits: an "
                            f"ensemble averages one model per seed")  # fmt: skip
    if len(runs) < 2:
        raise EnsembleError(f"repeat {group_id} has {len(runs)} seed: an ensemble needs 2 or more")
    md5s = {r.seed: children[r.run_id].data.tags.get("xp.data.test.md5") for r in runs}
    if len(set(md5s.values())) > 1:
        shown = ", ".join(f"seed {s}: {m}" for s, m in md5s.items())
        raise EnsembleError(f"repeat {group_id}: its seeds were tested on different test data "
                            f"({shown}): their answers cannot be averaged")  # fmt: skip
    seeds: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in runs:
            recorded = _answers(r.run_id, r.seed, group_id, Path(tmp))
            seeds[r.seed] = {"run_id": r.run_id, "metrics": r.metrics, "recorded": recorded}
    first = seeds[runs[0].seed]["recorded"]
    task = "classification" if "probs" in first else "regression"
    metric = _metric(metric or parent.data.tags.get("xp.metric") or "test/f1", task)
    test_md5 = next(iter(md5s.values()))
    for seed, s in seeds.items():
        rec = s.pop("recorded")
        if not np.array_equal(rec["labels"], first["labels"]):
            raise EnsembleError(
                f"seed {seed}'s recorded test labels differ from seed "
                f"{runs[0].seed}'s: they did not answer the same test set"
            )
        if str(rec.get("md5", "")) not in ("", test_md5):
            raise EnsembleError(f"seed {seed}: its predictions are of test data {rec['md5']}, "
                                f"its run says {test_md5}")  # fmt: skip
        s["answers"] = rec["probs" if task == "classification" else "pred"]
        check_recorded(seed, task, rec["labels"], s["answers"], s["metrics"])
    return {"parent": parent, "metric": metric, "task": task, "labels": first["labels"],
            "test_md5": test_md5, "seeds": seeds}  # fmt: skip


def _metric(metric: str, task: str) -> str:
    name = metric.removeprefix("test/")
    if not metric.startswith("test/") or name not in TASK_METRICS[task]:
        known = ", ".join(f"test/{m}" for m in TASK_METRICS[task])
        raise EnsembleError(f"--metric {metric}: an ensemble is measured on the test set's task "
                            f"metrics ({known})")  # fmt: skip
    return metric


# -- the verb -----------------------------------------------------------------------------------
def evaluate(
    group_id: str, metric: str | None = None, alpha: float = 0.05, resamples: int | None = None
) -> dict[str, Any]:
    """The ensemble of a repeat's seeds against its representative seed, on the test set.

    Args:
        group_id: a repeat run id.
        metric: `test/<m>` (default: the repeat's metric).
        alpha: one-sided significance level of "the ensemble beats the representative seed".
        resamples: bootstrap resamples (default `RESAMPLES`).

    Returns:
        {"group", "project", "task", "metric", "alpha", "test_md5", "n_test", "seeds" (list),
        "run_ids" (seed -> run id), "values" (seed -> recorded metric), "seeds_mean",
        "representative", "representative_run_id", "ensemble", "ensemble_ci",
        "representative_value", "representative_ci", "diff", "diff_ci", "p_value", "beats",
        "ensemble_metrics" (every task metric of the ensemble), "resamples", "answers" (the
        averaged answers; left out of `as_json`)}.

    Raises:
        EnsembleError: see `read_seeds`.
        TrackingError: unknown run id.
    """
    from xp.registry import representative_seed

    average = _served().average
    found = read_seeds(group_id, metric)
    metric, task, labels, seeds = found["metric"], found["task"], found["labels"], found["seeds"]
    name = metric.removeprefix("test/")
    values = {s: float(v["metrics"][metric]) for s, v in seeds.items()}
    rep = representative_seed(values)
    answers = average([seeds[s]["answers"] for s in sorted(seeds)])
    boot = paired_bootstrap(task, name, labels, answers, seeds[rep]["answers"],
                            resamples or RESAMPLES)  # fmt: skip
    return {
        "group": group_id, "project": found["parent"].data.tags.get("xp.project", ""),
        "task": task, "metric": metric, "alpha": alpha, "test_md5": found["test_md5"],
        "n_test": len(labels), "seeds": sorted(seeds),
        "run_ids": {s: seeds[s]["run_id"] for s in sorted(seeds)}, "values": values,
        "seeds_mean": float(np.mean(list(values.values()))), "representative": rep,
        "representative_run_id": seeds[rep]["run_id"], "ensemble": boot["ensemble"],
        "ensemble_ci": boot["ensemble_ci"], "representative_value": boot["reference"],
        "representative_ci": boot["reference_ci"], "diff": boot["diff"],
        "diff_ci": boot["diff_ci"], "p_value": boot["p_value"],
        "beats": boot["p_value"] < alpha, "resamples": boot["resamples"],
        "ensemble_metrics": metrics_of(task, labels, answers), "answers": answers,
    }  # fmt: skip


def as_json(result: dict[str, Any]) -> str:
    """`ensemble/ensemble.json`: the result without the averaged answers."""
    return json.dumps({k: v for k, v in result.items() if k != "answers"}, indent=1)


def ensemble_tags(result: dict[str, Any]) -> dict[str, str]:
    """`xp.ensemble.*`: on the repeat run (`xp ensemble`) and on a registered ensemble."""
    low, high = result["ensemble_ci"]
    dlow, dhigh = result["diff_ci"]
    return {
        "xp.ensemble.metric": result["metric"],
        "xp.ensemble.seeds": ",".join(map(str, result["seeds"])),
        "xp.ensemble.value": _num(result["ensemble"]), "xp.ensemble.ci95_low": _num(low),
        "xp.ensemble.ci95_high": _num(high),
        "xp.ensemble.representative": str(result["representative"]),
        "xp.ensemble.representative_value": _num(result["representative_value"]),
        "xp.ensemble.seeds_mean": _num(result["seeds_mean"]),
        "xp.ensemble.diff": _num(result["diff"]), "xp.ensemble.diff_ci95_low": _num(dlow),
        "xp.ensemble.diff_ci95_high": _num(dhigh), "xp.ensemble.p_value": _num(result["p_value"]),
        "xp.ensemble.alpha": f"{result['alpha']:g}",
        "xp.ensemble.verdict": "beats" if result["beats"] else "does_not_beat",
    }  # fmt: skip


def _served() -> Any:
    """xp.train.served, without MLflow's warnings about its classes' type hints."""
    import warnings

    with warnings.catch_warnings(record=True):  # (MLflow sets its own filter: kept, not shown)
        from xp.train import served
    return served


def _num(x: float) -> str:
    return "nan" if not math.isfinite(x) else f"{x:.6g}"


def record(result: dict[str, Any]) -> None:
    """The result on the repeat run: `xp.ensemble.*` tags and `ensemble/ensemble.json`.

    Tags, not metrics: `xp reproduce` compares every metric of a repeat run with its
    reproduction's, which has no ensemble until someone measures it."""
    import mlflow
    from mlflow.entities import RunTag

    client = mlflow.MlflowClient()
    tags = [RunTag(k, v) for k, v in ensemble_tags(result).items()]
    client.log_batch(result["group"], tags=tags)
    client.log_text(result["group"], as_json(result), "ensemble/ensemble.json")


def beats_gate(result: dict[str, Any]) -> Any:
    """`beats_representative`: the ensemble is better than the seed `xp promote` would register."""
    from xp.registry import Gate

    low, high = result["diff_ci"]
    value = (f"p={result['p_value']:.4g}: {result['metric']} {result['ensemble']:.4f} vs "
             f"{result['representative_value']:.4f} of seed {result['representative']}, "
             f"difference {result['diff']:+.4f} [{low:+.4f}, {high:+.4f}]")  # fmt: skip
    threshold = f"one-sided paired bootstrap p < {result['alpha']:g}"
    return Gate("beats_representative", bool(result["beats"]), value, threshold)


def promote(group_id: str, name: str, policy: Any = None, dry_run: bool = False) -> dict:
    """Register a repeat's seeds, averaged, as one model version of `name` (`xp promote
    --ensemble`): `xp promote`'s five gates and `beats_representative` must pass.

    Returns:
        The evaluation of `xp.registry.evaluate` with the sixth gate, "ensemble" (see
        `evaluate`), "version" (None for a dry run) and "model_uri".

    Raises:
        PromotionRefused: a gate failed (the registry is untouched).
        EnsembleError: see `read_seeds`; members whose models cannot be averaged.
        PromotionError, TrackingError: see `xp.registry.evaluate`.
    """
    from dataclasses import replace

    from xp import registry

    policy = policy or registry.Policy()
    result = evaluate(group_id, policy.metric, policy.alpha)
    ev = registry.evaluate(group_id, name, replace(policy, metric=result["metric"]))
    ev["gates"].append(beats_gate(result))
    ev["passed"] = all(g.passed for g in ev["gates"])
    ev["ensemble"] = {k: v for k, v in result.items() if k != "answers"}
    ev["tags"].update(ensemble_tags(result))
    run_ids = ",".join(result["run_ids"][s] for s in result["seeds"])
    ev["tags"].update({"xp.gates": registry.gates_json(ev["gates"]), "xp.ensemble": "true",
                       "xp.run_ids": run_ids})  # fmt: skip
    ev["version"], ev["model_uri"] = None, None
    if not ev["passed"] and not dry_run:
        raise registry.PromotionRefused(name, ev["gates"])
    members = _members(result["run_ids"], result["task"])
    if dry_run:
        return ev
    ev["model_uri"] = log_ensemble(group_id, members)
    ev["version"] = registry.register(ev, group_id, describe(ev))
    return ev


def _members(run_ids: dict[int, str], task: str) -> dict[int, str]:
    """Each seed's logged model (seed -> URI); refused, before anything is logged, where the
    ensemble model cannot average them."""
    import mlflow

    from xp.registry import _model_uri

    if task != "classification":
        raise EnsembleError(
            "--ensemble registers classifiers (it averages their prob_<label> "
            "answers); `xp ensemble` measures a regression repeat's average"
        )
    members = {}
    for seed, run_id in run_ids.items():
        members[seed] = uri = _model_uri(run_id)
        flavors = mlflow.models.get_model_info(uri).flavors
        pyfunc = flavors.get("python_function", {})
        if set(flavors) != {"python_function"} or pyfunc.get("loader_module") != (
            "mlflow.pyfunc.model"
        ):
            kinds = ", ".join(sorted(set(flavors) - {"python_function"})) or "plain pyfunc"
            raise EnsembleError(
                f"seed {seed}'s model is logged as {kinds}: it answers no prob_<label> columns to "
                f"average (--ensemble averages xp's own classifiers: the digits CNN, LoRA "
                f"adapters); promote the representative seed without --ensemble"
            )
    return members


def log_ensemble(group_id: str, members: dict[int, str]) -> str:
    """Log `SeedEnsemble` over the members' models as the repeat run's model `ensemble`; returns
    its URI. The members are copied into it: it loads without the seeds' runs."""
    import logging
    import warnings

    import mlflow
    from mlflow.models import Model

    import xp

    model = _served().SeedEnsemble()
    client = mlflow.MlflowClient()
    parent = client.get_run(group_id)
    with tempfile.TemporaryDirectory() as tmp:
        local = {f"seed_{s}": mlflow.artifacts.download_artifacts(
                    artifact_uri=uri, dst_path=str(Path(tmp) / f"seed_{s}"))
                 for s, uri in members.items()}  # fmt: skip
        first = Path(local[f"seed_{min(members)}"])
        logged = mlflow.initialize_logged_model(
            name="ensemble", source_run_id=group_id, experiment_id=parent.info.experiment_id
        )
        quiet = logging.getLogger("mlflow.pyfunc")  # "a python_model is pickled: caution"
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings(record=True):  # (MLflow's own filters: kept, not shown)
                info = mlflow.pyfunc.log_model(
                    name="ensemble", python_model=model, artifacts=local,
                    signature=Model.load(str(first / "MLmodel")).signature,
                    pip_requirements=str(first / "requirements.txt"),
                    code_paths=[str(Path(xp.__file__).parent)], model_id=logged.model_id,
                )  # fmt: skip
        finally:
            quiet.setLevel(level)
    return info.model_uri


def describe(ev: dict[str, Any]) -> str:
    """The registered ensemble's description."""
    r = ev["ensemble"]
    low, high = r["ensemble_ci"]
    dlow, dhigh = r["diff_ci"]
    return (f"Ensemble of seeds {', '.join(map(str, r['seeds']))} (repeat run {ev['group']}), "
            f"their probabilities averaged: {r['metric']} {r['ensemble']:.4f}, 95% CI "
            f"[{low:.4f}, {high:.4f}] over {r['n_test']} test examples; against seed "
            f"{r['representative']} ({r['representative_value']:.4f}, the seed closest to the "
            f"median): {r['diff']:+.4f} [{dlow:+.4f}, {dhigh:+.4f}], one-sided paired bootstrap "
            f"p={r['p_value']:.3g}.")  # fmt: skip
