"""Re-run a recorded run from its record alone and check that it comes out the same.

The record names everything: the commit and the uncommitted diff (code), the DVC md5 of every
data file (data), the command with its overrides and seeds (config). Reproducing builds that
code in a git worktree, puts that data in it from the DVC cache (or the default DVC remote),
runs the recorded command there into a new run tagged `xp.reproduces=<run id>`, and compares
every final metric. The user's working tree is never touched, so this works after the code,
the data and the tree have all moved on.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shlex
from pathlib import Path
from typing import Any

from xp import XpError
from xp.judge import (
    IDENTICAL,
    ReproduceError,
    check_default_margin,
    check_margin,
    compare_record,
    compare_values,
    default_margin,
    environment_changes,
    explain,
    one_cause,
    outcome_row,
    overall,
    spans_range,
    to_markdown,
    unit_values,
)
from xp.record.rebuild import (
    build_worktree,
    check_commit,
    executor_for,
    place_data,
    remove_worktree,
)
from xp.record.workspace import Workspace


# -- the job ------------------------------------------------------------------------------------
def _data_of(tags: dict[str, str]) -> dict[str, dict[str, str]]:
    names = [k[len("xp.data.") : -len(".path")] for k in tags
             if k.startswith("xp.data.") and k.endswith(".path")]  # fmt: skip
    return {n: {"path": tags[f"xp.data.{n}.path"], "md5": tags[f"xp.data.{n}.md5"]}
            for n in names if tags.get(f"xp.data.{n}.md5")}  # fmt: skip


def _new_run(experiment_id: str, original: Any, tags: dict[str, str]) -> str:
    import mlflow

    name = f"reproduce-{original.info.run_name or original.info.run_id[:8]}"
    run = mlflow.MlflowClient().create_run(
        experiment_id, tags={"mlflow.runName": name, "xp.reproduces": original.info.run_id, **tags}
    )
    return run.info.run_id


def reproduce(
    run_id: str,
    workspace: Workspace,
    *,
    tolerance: float = 0.0,
    jobs: int = 1,
    on_event: Any = None,
    on_start: Any = None,
    margin: float | None = None,
    seeds: str | None = None,
    executor: str = "warm",
) -> dict[str, Any]:
    """Rebuild a training or repeat run's code and data, re-run it, and compare the outcomes.

    Args:
        run_id: a training run (`xp.kind = train`) or a repeat run (every seed is re-run).
        workspace: the repository (its git objects and DVC cache hold the recorded versions).
        tolerance: largest absolute difference of a metric still `within tolerance`.
        jobs: seeds re-run at once (a repeat).
        on_event: progress callback of the executor (seed, kind, info).
        on_start: called with the new run's id once it exists.
        margin: a repeat only: the equivalence margin (metric units) of the statistical verdict;
            None: `default_margin`, what the original's and the re-run's seeds can resolve.
        seeds: a repeat only: fresh seeds (`6,7,8` or a count after the recorded ones) to re-run
            instead of the recorded ones; then only the statistical verdict applies.
        executor: `warm` (workers that train seed after seed) or `process` (a process per
            seed); code recorded before warm workers existed always runs as processes.

    Returns:
        {"original", "reproduction" (new run id), "kind", "verdict", "tolerance", "rows",
        "mismatches", "seeds" (per-seed verdicts of a repeat), "environment" (xp.env.* tags
        that changed: this machine's libraries are used, not the recorded ones), "log_dir"}.

    Raises:
        ReproduceError: the run is still running or killed, or an option does not fit it (a
            margin <= 0, or one that spans the whole range of a metric bounded in [0, 1]).
        RebuildError: the commit, diff or data is gone.
        TrackingError: unknown run id.
    """
    from xp.execute.executor import LocalExecutor
    from xp.record import track
    from xp.record.store import configure_store

    if margin is not None and not (math.isfinite(margin) and margin > 0):
        raise ReproduceError(f"--margin {margin}: give a positive number, in metric units")
    configure_store(workspace)
    root = workspace.root
    original = track.get_run(run_id)
    tags = original.data.tags
    kind = _check_reproducible(original, margin, seeds)
    children = _originals(original)
    check_margin(margin, tags.get("xp.metric", "test/f1"), children)
    commit = tags.get("xp.git.commit")
    check_commit(root, commit, run_id, tags.get("xp.git.remote"))
    fresh = _fresh_seeds(seeds, children) if seeds is not None else None
    if fresh is not None and margin is None:  # (only statistics can judge fresh seeds)
        check_default_margin(original, children, len(fresh))
    diff = _recorded_diff(original, children)
    data = {}
    for child in children:
        data.update(_data_of(child.data.tags))
    work = workspace.reproduce_dir(run_id)
    code = build_worktree(root, commit, diff, work / "code")
    group = None
    try:
        place_data(root, data, code, commit)
        experiment = original.info.experiment_id
        if kind == "repeat":
            group = _new_run(experiment, original, _repeat_tags(tags))
            _copy_repeat_record(original, group)
        new_ids, jobs_list = _seed_jobs(children, fresh, group, experiment, code, work)
        if on_start:
            on_start(group or new_ids[jobs_list[0].seed])
        LocalExecutor(jobs, cwd=code, kind=executor_for(code, executor)).run(
            jobs_list, _labelled(on_event or (lambda *a: None), new_ids)
        )
        for new_id in new_ids.values():  # a seed that crashed before training: say so
            if track.get_run(new_id).info.status == "RUNNING":
                _end_run(new_id, "FAILED")
        if group:
            from xp.repeat import rebuild_report

            rebuild_report(group, workspace)
            _end_run(group, "FINISHED")
    except KeyboardInterrupt:  # the seeds saved what they had and ended KILLED
        if group:
            _end_run(group, "KILLED")
        raise
    finally:
        remove_worktree(root, code)
    applied = hashlib.md5(diff.encode()).hexdigest() if diff is not None else None
    paired = [] if fresh is not None else children
    result = _verdicts(original, paired, group, new_ids, tolerance, work, applied)
    if kind == "repeat" and (result["verdict"] != IDENTICAL or margin is not None):
        result.update(_equivalence(original, children, new_ids, margin))
        _record_equivalence(group, result)
    return result


def _check_reproducible(original: Any, margin: float | None, seeds: str | None) -> str:
    """The run's kind, once it is one that can be reproduced with these options.

    Raises:
        ReproduceError: not a train or repeat run, a repeat's option on a single run, or a run
            still running or killed.
    """
    run_id, kind = original.info.run_id, original.data.tags.get("xp.kind")
    if kind not in ("train", "repeat"):
        raise ReproduceError(f"run {run_id} is a {kind} run; reproduce a train or repeat run")
    if kind == "train" and (margin is not None or seeds is not None):
        option = "--margin" if margin is not None else "--seeds"
        raise ReproduceError(
            f"{option} needs a repeat run (several seeds to compare): run {run_id} is a single "
            "training run; reproduce its repeat, or drop the option"
        )
    if original.info.status in ("RUNNING", "KILLED"):
        raise ReproduceError(
            f"run {run_id} is {original.info.status}: finish it first (`xp train ... --resume` "
            f"or the same `xp repeat` command), then reproduce it"
        )
    return kind


# metrics that lie in [0, 1] by definition (a task's, by their last path component)
def _recorded_diff(original: Any, children: list[Any]) -> str | None:
    """The uncommitted diff the run trained with (None on a clean tree); a repeat's seeds share
    it and carry it."""
    from xp.record import artifacts

    if original.data.tags.get("xp.git.dirty") != "true":
        return None
    try:
        return artifacts.recorded_text(children[0].info.run_id, "provenance/git.diff")
    except XpError:
        raise ReproduceError(
            f"run {original.info.run_id} ran on a dirty tree but its diff was not recorded"
        ) from None


def _seed_jobs(
    children: list[Any],
    fresh: list[int] | None,
    group: str | None,
    experiment: str,
    code: Path,
    work: Path,
) -> tuple[dict[int, str], list[Any]]:
    """One new run and one job per seed to re-run: each recorded seed's own command, or (fresh
    seeds) the first seed's with another seed. Returns (seed -> new run id, the jobs).

    Raises:
        ReproduceError: a seed recorded no `xp train` command.
    """
    from xp.execute.executor import SeedJob

    new_ids, jobs = {}, []
    plan = [(int(c.data.params.get("seed", 0)), c) for c in children]
    if fresh is not None:  # the first seed's record (on each of its folds), another seed each
        first = [
            c for c in children if c.data.params.get("seed") == children[0].data.params.get("seed")
        ]
        plan = [(seed, c) for seed in fresh for c in first]
    for seed, child in plan:
        links = {"xp.group": group, "mlflow.parentRunId": group} if group else {}
        if fresh is not None:
            links["xp.reproduce.fresh_seed"] = "true"
        key = run_key(child, seed)
        new_ids[key] = _new_run(experiment, child, links)
        command = child.data.tags.get("xp.command", "")
        if not command.startswith("xp train"):
            raise ReproduceError(f"run {child.info.run_id} recorded no `xp train` command")
        args = shlex.split(command)[2:]  # after `xp train`
        if fresh is not None:
            args = [a for a in args if not a.startswith("seed=")] + [f"seed={seed}"]
        if group:
            args += ["--group", group]
        env = {"MLFLOW_RUN_ID": new_ids[key], "PYTHONPATH": str(code),
               "MLFLOW_TRACKING_URI": os.environ["MLFLOW_TRACKING_URI"]}  # fmt: skip
        numerics = child.data.params.get("train.numerics", "native")
        name = f"seed-{seed}" if key == seed else f"fold-{key // FOLD_KEY - 1}-seed-{seed}"
        jobs.append(SeedJob(key, args, env=env, log=work / f"{name}.log", numerics=numerics))
    return new_ids, jobs


FOLD_KEY = 1_000_000  # a folds repeat's run key: fold * FOLD_KEY + seed (seeds stay below it)


def _labelled(on_event: Any, keys: Any) -> Any:
    """Progress events named `fold 2 seed 3` for a folds repeat's re-runs (keyed by `run_key`)."""
    names = {k: f"fold {k // FOLD_KEY - 1} seed {k % FOLD_KEY}" for k in keys if k >= FOLD_KEY}
    if not names:
        return on_event
    return lambda key, kind, info: on_event(key, kind, {**info, "label": names.get(key)})


def run_key(child: Any, seed: int | None = None) -> int:
    """What tells a repeat's training run apart among its re-runs: its seed, or for a run of a
    folds repeat its fold and seed as one number (`fold * FOLD_KEY + seed`)."""
    from xp.summary import run_fold

    seed = int(child.data.params.get("seed", 0)) if seed is None else seed
    fold = run_fold(child)
    return seed if fold is None else (fold + 1) * FOLD_KEY + seed


def _fresh_seeds(spec: str, children: list[Any]) -> list[int]:
    """`--seeds 6,7,8` (those) or `--seeds 5` (five seeds after the highest recorded one)."""
    from xp.repeat import RepeatError, parse_seeds

    try:
        seeds = parse_seeds(spec)
    except RepeatError as e:
        raise ReproduceError(str(e)) from None
    if "," not in spec:
        top = max(int(c.data.params.get("seed", 0)) for c in children)
        seeds = [top + s for s in seeds]
    if len(seeds) < 2:
        raise ReproduceError(f"--seeds {spec}: a statistical reproduction needs 2 seeds or more")
    return seeds


def _equivalence(
    original: Any, children: list[Any], new_ids: dict[int, str], margin: float | None
) -> dict[str, Any]:
    """TOST of the repeat's metric over the original seeds (`children`, the latest run of each)
    against the re-run ones."""
    from xp import stats
    from xp.record import track
    from xp.repeat import folds_of

    metric = original.data.tags.get("xp.metric", "test/f1")
    folds = folds_of(original.data.tags)
    rerun = [track.get_run(i) for i in new_ids.values()]
    before, after = (unit_values(runs, metric, folds) for runs in (children, rerun))
    if len(before) < 2 or len(after) < 2:
        raise ReproduceError(
            f"{metric}: {len(before)} original and {len(after)} re-run seeds succeeded; the "
            "statistical verdict needs 2 or more on each side"
        )
    chosen = margin if margin is not None else default_margin(before, len(after))
    test = stats.tost(before, after, chosen)
    if margin is None and spans_range(metric, before, chosen):  # (2 seeds a side: +-14 sd)
        test.update(verdict="inconclusive", too_wide=True, seeds_needed=None)
    return {"verdict": test["verdict"], "equivalence": {**test, "metric": metric,
            "margin_default": margin is None, "sd_a": stats.describe(before)["std"]}}  # fmt: skip


def _record_equivalence(group: str | None, result: dict[str, Any]) -> None:
    import mlflow

    if group is None:
        return
    eq = result["equivalence"]
    client = mlflow.MlflowClient()
    for key, value in {"xp.reproduce.verdict": result["verdict"],
                       "xp.reproduce.margin": f"{eq['margin']:g}",
                       "xp.reproduce.bound": f"{eq['bound']:.4g}",
                       "xp.reproduce.p_value": f"{eq['p_value']:.4g}"}.items():  # fmt: skip
        client.set_tag(group, key, value)
    client.log_text(group, to_markdown(result), "reproduce/comparison.md")
    client.log_text(group, json.dumps(result, indent=2, default=str), "reproduce/comparison.json")


def _originals(original: Any) -> list[Any]:
    """The training runs to re-run: the run itself, or the latest run of each repeat seed."""
    if original.data.tags.get("xp.kind") != "repeat":
        return [original]
    from xp.repeat import recorded_seed_runs

    runs, by_id = recorded_seed_runs(original)
    if not any(r.run_id for r in runs):
        raise ReproduceError(f"repeat run {original.info.run_id} has no seed runs to re-run")
    return [by_id[r.run_id] for r in runs if r.run_id]


def _repeat_tags(tags: dict[str, str]) -> dict[str, str]:
    skip = ("xp.verdict", "xp.failed_seeds", "xp.promoted")
    return {k: v for k, v in tags.items() if k.startswith("xp.") and k not in skip
            and not k.startswith("xp.reproduce")}  # fmt: skip


def _copy_repeat_record(original: Any, new_id: str) -> None:
    """The new parent carries the original's params and config, as `xp repeat` records them."""
    import mlflow
    from mlflow.entities import Param

    from xp.record import artifacts

    client = mlflow.MlflowClient()
    params = [Param(k, v) for k, v in original.data.params.items()]
    for i in range(0, len(params), 100):
        client.log_batch(new_id, params=params[i : i + 100])
    try:
        client.log_text(new_id, artifacts.recorded_text(original.info.run_id, "config.yaml"),
                        "config.yaml")  # fmt: skip
    except XpError:
        pass  # an older repeat without its config artifact: the params still say it all


def _end_run(run_id: str, status: str) -> None:
    """Close a run created by `create_run` (no fluent run is active here)."""
    import mlflow

    mlflow.MlflowClient().set_terminated(run_id, status)


def _verdicts(
    original: Any, children: list[Any], group: str | None, new_ids: dict[int, str],
    tolerance: float, work: Path, applied_diff_md5: str | None,
) -> dict[str, Any]:  # fmt: skip
    """Compare each seed (and a repeat's summary), record the verdicts on the new runs.

    The code is compared as applied: the commit plus the recorded diff (its md5), not a diff the
    worktree would give now, which picks up files that appeared in it since (caches, outputs)."""
    from xp.record import track

    rows, mismatches, per_seed, env, causes = [], [], {}, set(), {}
    from xp.summary import run_fold

    for child in children:
        key, fold = run_key(child), run_fold(child)
        seed = int(child.data.params.get("seed", 0)) if fold is None else f"{fold}/{key % FOLD_KEY}"
        new = track.get_run(new_ids[key])
        prefix = (
            (f"seed {seed}: " if fold is None else f"fold {fold} seed {key % FOLD_KEY}: ")
            if group
            else ""
        )
        seed_rows = compare_values(child.data.metrics, new.data.metrics, tolerance, prefix)
        seed_rows.append(outcome_row(child, new, prefix))
        ran = dict(new.data.tags)
        if applied_diff_md5 is not None:
            ran["xp.git.diff_md5"] = applied_diff_md5
        seed_mismatch = compare_record(child.data.tags, ran)
        per_seed[seed] = overall(seed_rows, seed_mismatch)
        cause = explain(per_seed[seed], child.data.tags, ran, seed_mismatch)
        if cause:
            causes.setdefault(cause, []).append(seed)
        rows += seed_rows
        mismatches += [prefix + m for m in seed_mismatch]
        env.update(environment_changes(child.data.tags, new.data.tags))
        _record(new_ids[key], child.info.run_id, seed_rows, seed_mismatch, tolerance, cause)
    if group and children:  # (fresh seeds are not the same seeds: only statistics compare)
        new_group = track.get_run(group).data.metrics
        summary = compare_values(original.data.metrics, new_group, tolerance)
        rows = summary + rows
    first = next(iter(new_ids.values()))
    result = {"original": original.info.run_id, "reproduction": group or first,
              "kind": original.data.tags["xp.kind"], "verdict": overall(rows, mismatches),
              "tolerance": tolerance, "rows": rows, "mismatches": mismatches,
              "seeds": per_seed, "environment": sorted(env), "log_dir": str(work)}  # fmt: skip
    result["cause"] = one_cause(result["verdict"], causes, group is not None) if rows else None
    if group and children:
        _record(group, original.info.run_id, rows, mismatches, tolerance, result["cause"])
    work.mkdir(parents=True, exist_ok=True)
    (work / "comparison.md").write_text(to_markdown(result))
    return result


def _record(run_id: str, original_id: str, rows: list, mismatches: list, tolerance: float,
            cause: str | None) -> None:  # fmt: skip
    """Tags and artifacts of the comparison on the reproducing run."""
    import mlflow

    result = {"original": original_id, "verdict": overall(rows, mismatches),
              "tolerance": tolerance, "rows": rows, "mismatches": mismatches,
              "cause": cause}  # fmt: skip
    diffs = [abs(r["diff"]) for r in rows if isinstance(r["diff"], float)]
    client = mlflow.MlflowClient()
    tags = {"xp.reproduces": original_id, "xp.reproduce.verdict": result["verdict"],
            "xp.reproduce.tolerance": f"{tolerance:g}",
            "xp.reproduce.max_abs_diff": f"{max(diffs, default=0.0):.6g}"}  # fmt: skip
    if cause:
        tags["xp.reproduce.cause"] = cause[:5000]
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    client.log_text(run_id, to_markdown(result), "reproduce/comparison.md")
    client.log_text(run_id, json.dumps(result, indent=2, default=str), "reproduce/comparison.json")
