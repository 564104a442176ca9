"""Several seeds of one configuration: a parent run, one child training run per seed, a summary.

The same command run again resumes: the parent of the same configuration (config hash, commit,
uncommitted diff, data md5s, seeds) is reopened, finished seeds are reused, killed ones resume
from their checkpoints, crashed ones start over; nothing is trained twice.
"""

from __future__ import annotations

import math
import os
import shlex
from pathlib import Path
from typing import Any

from xp import XpError
from xp.config import Config, flatten, run_name, to_yaml
from xp.execute.executor import Executor, OnEvent, SeedJob
from xp.record.workspace import Workspace
from xp.summary import SUCCESS, SeedRun, parent_metrics, seed_runs, successful_values, summarize
from xp.train.folds import design_overrides, split_design


class RepeatError(XpError):
    """A repeat that cannot run as asked (bad seeds, unknown baseline, unknown metric)."""


def parse_seeds(spec: str) -> list[int]:
    """`5` -> seeds 1..5; `1,2,7` -> those seeds.

    Raises:
        RepeatError: not a count or a comma-separated list of distinct non-negative integers.
    """
    try:
        if "," not in spec:
            n = int(spec)
            if n < 1:
                raise ValueError
            return list(range(1, n + 1))
        seeds = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise RepeatError(f"--seeds {spec!r}: give a count (5) or a list (1,2,7)") from None
    if len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
        raise RepeatError(f"--seeds {spec!r}: seeds must be distinct and >= 0")
    return seeds


def recorded_seed_runs(parent: Any) -> tuple[list[SeedRun], dict[str, Any]]:
    """The latest run of each seed (each fold and seed of a folds repeat) of a recorded repeat
    run, and its children's runs by id."""
    from xp.record import track

    children = track.children_of(parent.info.run_id)
    seeds = [int(s) for s in parent.data.tags["xp.seeds"].split(",")]
    return seed_runs(children, seeds, folds_of(parent.data.tags)), {
        c.info.run_id: c for c in children
    }


def folds_of(tags: dict[str, str]) -> int | None:
    """The folds (or resamples) of a repeat run from its tags; None for a fixed split."""
    count = tags.get("xp.split.count")
    return int(count) if count else None


def reused(runs: list[SeedRun], jobs: list[SeedJob]) -> list[Any]:
    """The runs this call did not train: seeds (or `fold/seed`s) reused from the store."""
    trained = {j.log.stem for j in jobs if j.log}
    return [r.short for r in runs if r.label.replace(" ", "-") not in trained]


def labelled(on_event: OnEvent, runs: list[SeedRun], design: dict | None) -> OnEvent:
    """Progress events with the run's name (`fold 2 seed 3`) for a folds repeat's jobs, whose
    keys are places in the (fold, seed) list."""
    if design is None:
        return on_event
    names = {i: r.label for i, r in enumerate(runs)}
    return lambda key, kind, info: on_event(key, kind, {**info, "label": names.get(key)})


def plan_jobs(
    runs: list[SeedRun],
    base_args: list[str],
    parent_id: str,
    threads: int,
    log_dir: Path,
    numerics: str = "native",
    design: dict[str, Any] | None = None,
) -> list[SeedJob]:
    """Jobs for seeds still to train: killed ones resume, crashed or missing ones start anew.

    A job's key (`SeedJob.seed`, what progress events name) is the seed, or its place in the
    repeat's (fold, seed) list for a folds repeat; the label says which."""
    jobs = []
    for i, r in enumerate(runs):
        if r.outcome in SUCCESS or r.outcome in ("failed", "pruned"):
            continue  # a finished seed, successful or not, is a result: never trained twice
        args = [*base_args, f"seed={r.seed}", *design_overrides(design, r.fold),
                f"train.threads={threads}", "--group", parent_id]  # fmt: skip
        if r.outcome == "killed" and r.run_id:
            args += ["--resume", r.run_id]
        name = r.label.replace(" ", "-")
        key = r.seed if r.fold is None else i
        jobs.append(SeedJob(key, args, log=log_dir / f"{name}.log", numerics=numerics))
    return jobs


LIVE_SEED_WAIT_SECONDS = 60.0


def _wait_for_live_seeds(workspace: Workspace, runs: list[SeedRun]) -> bool:
    """Seeds whose run is RUNNING may still have a live process (the parent was killed a moment
    ago and they are checkpointing): wait until they are gone, so none is trained twice at once.

    Raises:
        RepeatError: a seed is still being trained by a live process after the wait.
    """
    from xp.record import supervise

    running = [r.run_id for r in runs if r.status == "RUNNING" and r.run_id]
    if not running:
        return False
    held = supervise.wait_released(workspace, running, LIVE_SEED_WAIT_SECONDS)
    if held:
        pids = ", ".join(str(supervise.holder(workspace, r)) for r in held)
        raise RepeatError(
            f"seed run(s) {', '.join(held)} are still being trained by process(es) {pids}; "
            "is the same repeat running elsewhere? Stop it, or wait for it to end"
        )
    return True


def repeat_command(project: str, overrides: list[str], seeds: str, extra: list[str]) -> str:
    """The `xp repeat` command line that re-runs (or resumes) a repeat."""
    return shlex.join(["xp", "repeat", project, *overrides, "--seeds", seeds, *extra])


def shared_params(config: Config) -> dict[str, str]:
    """The config as params, without per-seed values (those live on the children)."""
    return {k: v for k, v in flatten(config).items() if not k.startswith("seed")}


def run_seeds(executor: Executor, jobs: list[SeedJob], on_event: OnEvent) -> dict[int, int]:
    """Run the jobs; returns seed -> exit code (a seed's failure is data, not an exception)."""
    if not jobs:
        return {}
    return executor.run(jobs, on_event)


def check_metric(config: Config, metric: str | None) -> str:
    """`--metric` as the store spells it (default `test/<eval.metric>`).

    Raises:
        RepeatError: not a metric of the task, or of an extra test set the config names.
    """
    from xp.config import metric_key, metrics_for

    metric = metric_key(metric or f"test/{config.eval.metric}")
    name = metric.rsplit("/", 1)[-1]
    extra_tests = getattr(config.data, "extra_tests", {})  # (a script project's data: none)
    prefixes = ("test/", "best/val/", *(f"test:{t}/" for t in extra_tests))
    if not metric.startswith(prefixes) or name not in metrics_for(config.task):
        allowed = ", ".join(f"test/{m}" for m in metrics_for(config.task))
        extra = ", ".join(f"test:{t}/<m>" for t in extra_tests)
        raise RepeatError(f"--metric {metric}: not a {config.task} metric; use one of {allowed}"
                          + (f" (or an extra test set's: {extra})" if extra else ""))  # fmt: skip
    return metric


def _check_same_data(base: dict | None, design: dict | None, test_md5: str) -> None:
    """A baseline repeat scored on this repeat's test data and, for folds, on the same rows.

    Raises:
        RepeatError: other test data, or folds holding other rows.
    """
    if base and design and base.get("split_md5", {}).get(0) not in (None, design["md5_0"]):
        raise RepeatError(
            f"--baseline {base['id']}: its folds hold other rows than this repeat's (other train "
            "or validation data): no fold pairs with another"
        )
    if base and base.get("test_md5") and base["test_md5"] != test_md5:
        raise RepeatError(
            f"--baseline {base['id']} was tested on other test data (md5 {base['test_md5']} vs "
            f"{test_md5}): a score on other data proves nothing"
        )


def design_tags(design: dict[str, Any] | None) -> dict[str, str]:
    """A folds repeat's own tags: its split design (`kfold5/seed 1`), kind, count and seed."""
    if not design:
        return {}
    return {"xp.split.design": design["design"], "xp.split.kind": design["kind"],
            "xp.split.count": str(design["count"]),
            "xp.split.seed": str(design["seed"])}  # fmt: skip


def _check_baseline_number(spec: str | None) -> float | None:
    """`--baseline` as a number (None when it is a run id); a NaN or infinite one is refused."""
    try:
        value = float(spec) if spec is not None else None
    except ValueError:
        return None
    if value is not None and not math.isfinite(value):
        raise RepeatError(f"--baseline {spec}: not a finite number; give a number or a repeat "
                          "run id")  # fmt: skip
    return value


def resolve_baseline(
    spec: str | None, metric: str, design: str | None = None
) -> dict[str, Any] | None:
    """`--baseline`: a repeat run id (its successful seeds' values) or a number. A folds repeat
    (`design`, its `xp.split.design`) compares with a repeat of the same folds only, paired by
    fold: its values by (fold, seed) are `by_split`.

    Raises:
        RepeatError: not a number, not a repeat run, fewer than 2 seeds with the metric, or
            another split design than the candidate's.
    """
    if spec is None:
        return None
    value = _check_baseline_number(spec)
    if value is not None:  # a constant baseline: Welch with zero variance is the one-sample t-test
        return {"kind": "value", "id": None, "values": [value, value]}
    from xp.record import track

    run = track.get_run(spec)
    if run.data.tags.get("xp.kind") != "repeat":
        raise RepeatError(
            f"--baseline {spec}: not a repeat run (xp.kind={run.data.tags.get('xp.kind')})"
        )
    theirs = run.data.tags.get("xp.split.design")
    if theirs != design:
        said = {None: "the files' own split"}
        raise RepeatError(
            f"--baseline {spec} was run on {said.get(theirs, theirs)} and this repeat on "
            f"{said.get(design, design)}: compare repeats of the same split design (the same "
            "--folds/--resamples and --split-seed), paired by fold"
        )
    runs, _ = recorded_seed_runs(run)
    by_key = successful_values(runs, metric)
    values = list(by_key.values())
    if len(values) < 2:
        raise RepeatError(
            f"--baseline {spec}: {len(values)} successful seeds have {metric}; need 2 or more"
        )
    out = {"kind": "run", "id": spec, "values": values,
           "test_md5": run.data.tags.get("xp.data.test.md5")}  # fmt: skip
    if design:
        out["by_split"] = by_key
        out["split_md5"] = {r.fold: r.split.get("md5") for r in runs if r.split.get("md5")}
    return out


def _same_provenance(run: Any, tags: dict[str, str]) -> bool:
    keys = [k for k in tags if k.endswith(".md5")] + ["xp.git.commit", "xp.seeds", "xp.study",
                                                      "xp.split.design"]  # fmt: skip
    return all(run.data.tags.get(k) == tags.get(k) for k in keys)


def find_parent(experiment_id: str, tags: dict[str, str]) -> str | None:
    """A repeat run of this exact configuration, code, data and seeds, to resume, if any."""
    from xp.record import track

    filt = (f"tags.`xp.kind` = 'repeat' and tags.`xp.config_hash` = '{tags['xp.config_hash']}'"
            f" and tags.`xp.git.commit` = '{tags['xp.git.commit']}'")  # fmt: skip
    found = [r for r in track.search_runs(filt, [experiment_id])
             if _same_provenance(r, tags) and "xp.reproduces" not in r.data.tags]  # fmt: skip
    found.sort(key=lambda r: r.info.start_time)
    return found[-1].info.run_id if found else None


def collect(
    parent_id: str, seeds: list[int], metric: str, folds: int | None = None
) -> tuple[list[SeedRun], dict]:
    """The seeds' runs and their learning curves (validation metric, training loss)."""
    from xp.record import artifacts, track

    runs = seed_runs(track.children_of(parent_id), seeds, folds)
    val_key = f"val/{metric.rsplit('/', 1)[-1]}"
    keys = [val_key, f"train_sample/{val_key[4:]}", "train/loss"]  # (the sample: overfitting)
    histories = {r.seed if r.fold is None else r.label: track.metric_histories(r.run_id, keys)
                 for r in runs if r.run_id}  # fmt: skip
    for r in runs:  # each seed's error analysis (none for a run recorded before it)
        r.errors = artifacts.recorded_json(r.run_id, "errors/errors.json") if r.run_id else {}
    return runs, histories


def record_summary(
    tracker: Any, summary: dict[str, Any], histories: dict, title: str, workspace: Workspace
) -> Path:
    """Log the summary metrics, tags and report to the parent run; returns the report folder."""
    from xp import report

    tracker.log_metrics(parent_metrics(summary), 0)
    tags = {"xp.failed_seeds": ",".join(map(str, summary["failed_seeds"])),
            "mlflow.note.content": report.note(summary)}  # fmt: skip
    if summary.get("verdict"):
        tags["xp.verdict"] = summary["verdict"]
    tags["xp.seed_check"] = "; ".join(summary.get("seed_check") or []) or "ok"
    tracker.set_tags(tags)
    out = workspace.run_dir(tracker.run_id) / "report"  # a local copy next to the run's logs
    report.write_report(summary, histories, out, title)
    tracker.log_artifacts(out, "report")
    return out


def repeat(
    config: Config,
    workspace: Workspace,
    *,
    overrides: list[str],
    seeds_spec: str,
    executor: Any,
    metric: str | None = None,
    baseline: str | None = None,
    alpha: float = 0.05,
    min_effect: float = 0.0,
    on_event: OnEvent | None = None,
    on_parent: Any = None,
    extra_tags: dict[str, str] | None = None,
    folds: int | None = None,
    resamples: int | None = None,
    split_seed: int | None = None,
) -> dict[str, Any]:
    """Train every seed of one configuration under a parent run and summarise them; with
    `folds` (or `resamples`), every seed on every fold: a child run per (fold, seed).

    Args:
        config: the validated config (its own seed is ignored; `--seeds` decides).
        workspace: the repository it runs in.
        overrides: the user's `key=value` overrides (passed to every seed).
        seeds_spec: `5` or `1,2,7`.
        executor: where seeds run (`LocalExecutor`).
        metric: the verdict's metric; default `test/<eval.metric>`.
        baseline: a repeat run id or a number, or None.
        alpha: significance level.
        min_effect: smallest improvement that counts, in metric units.
        on_event: progress callback of the executor.
        on_parent: called with the parent run id once it exists.
        extra_tags: tags of the parent besides xp's own (a search's `xp.study`, `xp.stage`,
            `mlflow.parentRunId`); `xp.study` is part of what a resumed repeat must match.
        folds: K-fold over train + validation pooled (the test set fixed), or None.
        resamples: that many random re-splits of the same sizes instead, or None.
        split_seed: the seed of the folds, the same for every seed of the repeat (default 1).

    Returns:
        The summary, with `parent_run_id` and `report_dir` added.

    Raises:
        XpError: bad seeds or metric, unknown baseline, missing data.
    """
    seeds = parse_seeds(seeds_spec)
    if any(o.split("=", 1)[0].split(".")[0] == "seed" for o in overrides):
        raise RepeatError("seeds of a repeat come from --seeds, not seed=... overrides")
    metric = check_metric(config, metric)
    _check_baseline_number(baseline)  # before the store is opened: a typo costs nothing
    design = split_design(config, overrides, folds, resamples, split_seed)
    if design:
        from xp.train.data import first_fold

        design["md5_0"] = first_fold(config, workspace.root, design)["md5"]
    executor.warm_up(len(seeds), config.train.numerics)  # workers import while we set up
    from xp.record import tags as record
    from xp.record import track
    from xp.record.store import configure_store
    from xp.train.models import model_source

    configure_store(workspace)
    base = resolve_baseline(baseline, metric, design and design["design"])
    prov = record.gather(config, workspace, model_source(config, workspace.root))
    _check_same_data(base, design, prov.data["test"]["md5"])
    extra = ["--metric", metric] + (["--baseline", baseline] if baseline else [])
    extra += ["--alpha", str(alpha)] if alpha != 0.05 else []
    extra += ["--min-effect", str(min_effect)] if min_effect else []
    if design:
        extra += [design["option"], str(design["count"]), "--split-seed", str(design["seed"])]
    command = repeat_command(config.project, overrides, seeds_spec, extra)
    tags = record.tags_for(config, prov, config.train.deterministic, command)
    tags.update({"xp.kind": "repeat", "xp.seeds": ",".join(map(str, seeds)), "xp.metric": metric,
                 "xp.alpha": str(alpha), "xp.min_effect": str(min_effect)})  # fmt: skip
    if baseline:
        tags["xp.baseline"] = baseline
    tags.update(design_tags(design))
    suffix = f"{design['kind']}{design['count']}x{len(seeds)}" if design else f"x{len(seeds)}"
    tags["mlflow.runName"] = run_name(config, workspace.projects, suffix)
    tags.update(extra_tags or {})  # a search's confirmation: its study, nested under it
    existing = None
    if not os.environ.get("MLFLOW_RUN_ID"):  # under `mlflow run` the parent is MLflow's run
        existing = find_parent(track.experiment_for(config.project, workspace), tags)
    tracker = track.start_tracker(
        True, config.project, workspace, resume_run_id=existing, tags=tags
    )
    parent = tracker.run_id
    if on_parent:
        on_parent(parent, existing is not None)
    try:
        if existing is None:
            tracker.log_params(shared_params(config))
            tracker.log_text(to_yaml(config), "config.yaml")
        count = design["count"] if design else None
        runs, _ = collect(parent, seeds, metric, count)
        if _wait_for_live_seeds(workspace, runs):  # orphans of a killed parent still checkpointing
            runs, _ = collect(parent, seeds, metric, count)
        log_dir = workspace.run_dir(parent)
        jobs = plan_jobs(runs, [config.project, *overrides], parent, executor.threads_per_job(),
                         log_dir, config.train.numerics, design)  # fmt: skip
        env = {"MLFLOW_EXPERIMENT_ID": track.get_run(parent).info.experiment_id}
        for job in jobs:
            job.env.update(env)
        run_seeds(executor, jobs, labelled(on_event or (lambda *a: None), runs, design))
        runs, histories = collect(parent, seeds, metric, count)
        summary = summarize(runs, metric, base, alpha, min_effect)
        summary["reused_seeds"] = reused(runs, jobs)
        over = "folds x seeds" if design else "seeds"
        title = f"{tags['mlflow.runName']}: {metric} over {over}"  # (its readable name)
        summary["report_dir"] = str(record_summary(tracker, summary, histories, title, workspace))
        summary["parent_run_id"] = parent
        tracker.end("FINISHED")
        return summary
    except KeyboardInterrupt:
        tracker.end("KILLED")
        raise
    except BaseException:
        tracker.end("FAILED")
        raise


def rebuild_report(parent_id: str, workspace: Workspace) -> dict[str, Any]:
    """Recompute a repeat's summary and report from the store and log them to it again.

    Raises:
        XpError: unknown run id, or not a repeat run.
    """
    from xp.record import track

    run = track.get_run(parent_id)
    tags = run.data.tags
    if tags.get("xp.kind") != "repeat":
        raise RepeatError(f"run {parent_id} is not a repeat run (xp.kind={tags.get('xp.kind')})")
    seeds = [int(s) for s in tags["xp.seeds"].split(",")]
    metric = tags["xp.metric"]
    base = resolve_baseline(tags.get("xp.baseline"), metric, tags.get("xp.split.design"))
    alpha, min_effect = float(tags.get("xp.alpha", 0.05)), float(tags.get("xp.min_effect", 0))
    runs, histories = collect(parent_id, seeds, metric, folds_of(tags))
    summary = summarize(runs, metric, base, alpha, min_effect)
    name = tags.get("mlflow.runName") or f"{tags['xp.project']} {tags['xp.config_hash']}"
    title = f"{name}: {metric} over {'folds x seeds' if folds_of(tags) else 'seeds'}"
    tracker = track.MlflowTracker(parent_id)
    summary["report_dir"] = str(record_summary(tracker, summary, histories, title, workspace))
    tracker.flush()
    summary["parent_run_id"] = parent_id
    return summary
