"""Hyperparameter search that confirms its winner with fresh seeds.

Optuna is the engine (its seeded samplers and pruners, its study storage); xp runs the trials
as training runs through the executor, nested under a study run, then re-runs the best
`--confirm-top` configurations as repeats on seeds no trial used, ranks them with `xp compare`'s
machinery, and writes the study report (`xp.search.report`).

A study is identified by what it searches (project, overrides, space, method, pruner, metric,
seeds per trial, code): the same command finds its study and its parent run again and continues
where it stopped, after Ctrl-C or kill -9, with no trial lost and none run twice.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xp import XpError
from xp.config import Config, ScriptConfig, higher_is_better, load_config, metrics_for
from xp.record.workspace import Workspace
from xp.search.space import as_override, grid_points, load_space
from xp.train.pruning import (
    METRIC_ENV,
    PRUNE_ENV,
    STARTUP_TRIALS,  # noqa: F401  (the driver's and the tests' view of the pruner)
    STORAGE_ENV,
    STUDY_ENV,
    TAGS_ENV,
    TRIAL_ENV,
    make_pruner,
)

METHODS = ("grid", "random", "tpe")
PRUNERS = ("none", "median")
SAMPLER_SEED = 0  # every sampler is seeded: the same study proposes the same trials


class SearchError(XpError):
    """A search that cannot start: bad options, space, metric or study storage."""


def check_options(config: Config, method: str, prune: str, trials: int, seeds_per_trial: int,
                  confirm_top: int, confirm_seeds: int, metric: str) -> None:  # fmt: skip
    """Every option a user can get wrong, before anything is recorded.

    Raises:
        SearchError: naming the option, the value and what is allowed.
    """
    if method not in METHODS:
        raise SearchError(f"--method {method}: unknown; use one of {', '.join(METHODS)}")
    if prune not in PRUNERS:
        raise SearchError(f"--prune {prune}: unknown; use one of {', '.join(PRUNERS)}")
    if trials < 1:
        raise SearchError(f"--trials {trials}: give at least 1")
    if seeds_per_trial < 1:
        raise SearchError(f"--seeds-per-trial {seeds_per_trial}: a trial needs at least 1 seed")
    if prune != "none" and seeds_per_trial != 1:
        raise SearchError("--prune median needs --seeds-per-trial 1 (a pruner judges one curve)")
    if prune != "none" and isinstance(config, ScriptConfig):
        raise SearchError(
            f"--prune {prune}: project {config.project!r} is a script, whose trials "
            "run to their end (no pruner reaches into it yet); use --prune none"
        )
    if confirm_top < 0:
        raise SearchError(f"--confirm-top {confirm_top}: give 0 (no confirmation) or more")
    if confirm_top and confirm_seeds < 2:
        raise SearchError(f"--confirm-seeds {confirm_seeds}: a confirmation needs at least 2 "
                          "seeds (an interval needs two)")  # fmt: skip
    name = metric.removeprefix("best/val/")
    if not metric.startswith("best/val/") or name not in metrics_for(config.task):
        allowed = ", ".join(f"best/val/{m}" for m in metrics_for(config.task))
        raise SearchError(f"--metric {metric}: the runs do not log it; a search is scored on "
                          f"validation: use one of {allowed}")  # fmt: skip


def study_storage(explicit: str | None) -> str:
    """Where the study lives: beside the runs (the SQLite store's folder; a PostgreSQL store's
    server, database `<name>_optuna`), or `--storage` / `XP_SEARCH_STORAGE`.

    Raises:
        SearchError: a tracking server with no storage given (Optuna needs a database).
    """
    from xp.record.store import redact

    if explicit or os.environ.get(STORAGE_ENV):
        return explicit or os.environ[STORAGE_ENV]
    uri = os.environ["MLFLOW_TRACKING_URI"]
    if uri.startswith("sqlite:///"):
        return f"sqlite:///{Path(uri.removeprefix('sqlite:///')).parent / 'optuna.db'}"
    if uri.startswith(("postgresql", "mysql")):  # (its own database: both use alembic_version)
        from sqlalchemy.engine import make_url

        from xp.record.server import ensure_database

        url = make_url(uri)
        optuna_url = url.set(database=f"{url.database}_optuna").render_as_string(False)
        ensure_database(optuna_url)
        return optuna_url
    raise SearchError(f"a study on the tracking server {redact(uri)} needs a database every "
                      "machine reaches: give --storage postgresql://... (or set "
                      f"{STORAGE_ENV})")  # fmt: skip


def study_name(config: Config, overrides: list[str], space_text: str, method: str, prune: str,
               metric: str, seeds_per_trial: int, commit: str) -> str:  # fmt: skip
    """A study's identity: the same command on the same code finds the same study."""
    from xp.config import config_hash

    key = json.dumps([config_hash(config), sorted(overrides), space_text, method, prune, metric,
                      seeds_per_trial, commit])  # fmt: skip
    return f"xp-{config.project}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def make_study(name: str, storage: str, method: str, prune: str, space: dict, metric: str) -> Any:
    """The Optuna study (created, or loaded to continue)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if method == "grid":
        sampler = optuna.samplers.GridSampler(grid_points(space), seed=SAMPLER_SEED)
    elif method == "random":
        sampler = optuna.samplers.RandomSampler(seed=SAMPLER_SEED)
    else:
        sampler = optuna.samplers.TPESampler(seed=SAMPLER_SEED)
    pruner = make_pruner(prune)
    direction = "maximize" if higher_is_better(metric) else "minimize"
    try:
        return optuna.create_study(
            study_name=name, storage=storage, sampler=sampler, pruner=pruner,
            direction=direction, load_if_exists=True,
        )  # fmt: skip
    except Exception as e:
        from xp.record.store import redact

        raise SearchError(f"cannot open the study storage {redact(storage)}: "
                          f"{str(e).splitlines()[0][:200]}") from None  # fmt: skip


def trial_overrides(params: dict[str, Any], space: dict) -> list[str]:
    """A trial's knobs as `key=value` overrides, in the space's order."""
    return [as_override(k, params[k]) for k in space if k in params]


Progress = Callable[[str], None]


def _effective_trials(space: dict, method: str, trials: int, space_path: Path,
                      say: Progress) -> int:  # fmt: skip
    """`--trials`, or the grid's size when a grid has fewer points.

    Raises:
        SearchError: a grid over a continuous knob, or a grid larger than `--trials`.
    """
    if method != "grid":
        return trials
    grid = grid_points(space)
    if grid is None:
        continuous = next(k for k, d in space.items() if not hasattr(d, "choices")
                          and type(d).__name__ != "IntDistribution")  # fmt: skip
        raise SearchError(f"--method grid needs a finite space: {continuous} in {space_path} is "
                          "continuous; give it as {choice: [...]} or use --method tpe")  # fmt: skip
    size = 1
    for values in grid.values():
        size *= len(values)
    if size > trials:
        raise SearchError(f"the grid of {space_path} has {size} points, more than --trials "
                          f"{trials}: give --trials {size}, or fewer knobs or values")  # fmt: skip
    if size < trials:
        say(f"the grid has {size} points: {size} trials, not {trials}")
    return size


def trial_filter(study_run: str, number: int) -> str:
    """The store's filter for the training runs of one trial: the study's children
    (`xp.group`) of that trial (`xp.trial`)."""
    return f"tags.`xp.group` = '{study_run}' and tags.`xp.trial` = '{number}'"


def _trial_runs(study_run: str, number: int, seeds: list[int], experiment: str) -> list[Any]:
    """The latest training run of each seed of trial `number` (SeedRun, as a repeat's), in the
    study run's `experiment`.

    The store filters by trial, so a lookup reads that trial's runs only: the driver's cost per
    trial does not grow with the trials done (reading every child of the study and keeping one
    trial's made a study's lookups quadratic)."""
    from xp.record import track
    from xp.summary import seed_runs

    return seed_runs(track.search_runs(trial_filter(study_run, number), [experiment]), seeds)


def _driver() -> str:
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def _ours_to_resume(trial: Any) -> bool:
    """A RUNNING trial left by a driver of this machine that is gone (killed): resume it. One
    started on another machine is that machine's to resume."""
    if "xp_driver" not in trial.system_attrs:  # its driver died between asking and claiming it
        return True
    host, _, pid = str(trial.system_attrs["xp_driver"]).rpartition(":")
    if host != _driver().rpartition(":")[0]:
        return False
    try:
        os.kill(int(pid), 0)
        return int(pid) == os.getpid()
    except (ValueError, ProcessLookupError):
        return True
    except PermissionError:
        return False


OVER_BUDGET = "xp_over_budget"  # asked by two drivers for the last place: closed, never trained


def counted(study: Any) -> list[Any]:
    """The study's trials, less those asked past the budget by a concurrent driver."""
    return [t for t in study.get_trials(deepcopy=False) if not t.system_attrs.get(OVER_BUDGET)]


def _wait_for_other_drivers(study: Any, say: Progress) -> None:
    """Trials another live driver is training (on this machine or another) close before this one
    goes on to confirm: a study's trials are its drivers' together."""
    import time

    import optuna

    told = False
    while True:
        running = optuna.trial.TrialState.RUNNING
        theirs = [t.number for t in counted(study) if t.state == running and not _ours_to_resume(t)]
        if not theirs:
            return
        if not told:
            say(f"waiting for trial(s) {', '.join(map(str, theirs))} of another driver")
            told = True
        time.sleep(2)


def _outcome(runs: list[Any], metric: str) -> tuple[str, float | None]:
    """What a trial's seeds came to: (complete|pruned|fail|open, value)."""
    outcomes = {r.outcome for r in runs}
    if outcomes & {"killed"}:
        return "open", None  # resumable: the next command continues it
    if "pruned" in outcomes:
        return "pruned", None
    values = [r.metrics.get(metric) for r in runs]
    if outcomes - {"ok", "early_stopped"} or any(v is None for v in values):
        return "fail", None
    return "complete", sum(values) / len(values)


def run_trials(study: Any, space: dict, *, study_run: str, base: list[str], trials: int,
               seeds_per_trial: int, metric: str, prune: str, storage: str, executor: Any,
               workspace: Workspace, numerics: str, experiment_id: str, say: Progress,
               on_event: Any) -> None:  # fmt: skip
    """Run trials until `trials` of them are closed (complete, pruned or failed), `--jobs` at a
    time through the executor; first the ones a killed driver left open."""
    import optuna

    from xp.record import track
    from xp.repeat import plan_jobs

    state = optuna.trial.TrialState
    seeds = list(range(1, seeds_per_trial + 1))
    experiment = track.get_run(study_run).info.experiment_id  # where the study's children are
    log_dir = workspace.run_dir(study_run)
    jobs = max(1, getattr(executor, "jobs", 1))
    left_open: set[int] = set()  # killed in this invocation: the next command resumes them
    while True:
        every = counted(study)
        closed = [t for t in every if t.state.is_finished()]
        running = [t for t in every if t.state == state.RUNNING]
        batch = [t for t in running if t.number not in left_open and _ours_to_resume(t)][:jobs]
        room = trials - len(closed) - len(running)
        while len(batch) < jobs and room > 0:
            trial = study.ask(space)
            study._storage.set_trial_system_attr(trial._trial_id, "xp_driver", _driver())
            if sum(t.number < trial.number for t in counted(study)) >= trials:
                # another driver took the last place a moment ago: this one never trains
                study._storage.set_trial_system_attr(trial._trial_id, OVER_BUDGET, True)
                study.tell(trial, state=state.FAIL)
                break
            batch.append(study._storage.get_trial(trial._trial_id))
            room -= 1
        if not batch:
            _wait_for_other_drivers(study, say)
            return
        planned = []
        for t in batch:
            env = {
                "MLFLOW_EXPERIMENT_ID": experiment_id,
                TAGS_ENV: json.dumps(
                    {"xp.study": study_run, "xp.trial": str(t.number), "xp.stage": "search"}
                ),
            }
            if prune != "none":
                env.update(
                    {
                        STORAGE_ENV: storage,
                        STUDY_ENV: study.study_name,
                        PRUNE_ENV: prune,
                        TRIAL_ENV: str(t.number),
                        METRIC_ENV: metric.rsplit("/", 1)[-1],
                    }
                )
            args = [*base, *trial_overrides(t.params, space)]
            runs = _trial_runs(study_run, t.number, seeds, experiment)
            for job in plan_jobs(runs, args, study_run, executor.threads_per_job(), log_dir,
                                 numerics):  # fmt: skip
                job.env.update(env)
                job.log = log_dir / f"trial-{t.number}-seed-{job.seed}.log"
                job.seed = t.number * 1000 + job.seed  # (a key: one job per trial and seed)
                planned.append(job)
            say(f"trial {t.number}: {' '.join(trial_overrides(t.params, space))}")
        if planned:
            executor.run(planned, on_event)
        for t in batch:
            kind, value = _outcome(_trial_runs(study_run, t.number, seeds, experiment), metric)
            if kind == "open":
                left_open.add(t.number)
                say(f"trial {t.number}: a seed was killed; the same command resumes it")
            elif kind == "complete":
                study.tell(t.number, value)
                say(f"trial {t.number}: {metric} = {value:.4f}")
            else:
                study.tell(t.number, state=state.PRUNED if kind == "pruned" else state.FAIL)
                say(f"trial {t.number}: {kind}")


def _find_study_run(experiment_id: str, name: str) -> str | None:
    from xp.record import track

    found = track.search_runs(f"tags.`xp.study_name` = '{name}'", [experiment_id])
    found.sort(key=lambda r: (r.info.start_time, r.info.run_id))
    return found[0].info.run_id if found else None  # the first: drivers started at once agree


def search(config: Config, workspace: Workspace, *, overrides: list[str], space_path: Path,
           trials: int, method: str, prune: str, seeds_per_trial: int, confirm_top: int,
           confirm_seeds: int, metric: str, executor: Any, storage: str | None = None,
           say: Progress = print, on_event: Any = None) -> dict[str, Any]:  # fmt: skip
    """Search, confirm the best configurations on fresh seeds, rank them, report.

    Returns:
        The study summary (`xp.search.report.summarize`), with `study_run_id` and `report_dir`.

    Raises:
        XpError: bad options, space, metric or storage (before anything is recorded); trials
            left open by a killed seed (after the search; the same command continues).
    """
    check_options(config, method, prune, trials, seeds_per_trial, confirm_top, confirm_seeds,
                  metric)  # fmt: skip
    if confirm_top > trials:
        raise SearchError(f"--confirm-top {confirm_top} is more than --trials {trials}: at most "
                          f"{trials} configurations can be confirmed")  # fmt: skip
    space = load_space(space_path, config.project, overrides, workspace.projects)
    trials = _effective_trials(space, method, trials, space_path, say)
    executor.warm_up(min(trials, 2), config.train.numerics)
    from xp.record import tags as record
    from xp.record import track
    from xp.record.store import configure_store
    from xp.repeat import repeat_command, shared_params
    from xp.train.models import model_source

    configure_store(workspace)
    prov = record.gather(config, workspace, model_source(config, workspace.root))
    code = f"{prov.git.get('commit')}+{hashlib.md5(prov.git.get('diff', '').encode()).hexdigest()}"
    name = study_name(config, overrides, space_path.read_text(), method, prune, metric,
                      seeds_per_trial, code)  # fmt: skip
    where = study_storage(storage)
    study = make_study(name, where, method, prune, space, metric)
    extra = ["--space", str(space_path), "--trials", str(trials), "--method", method, "--prune",
             prune, "--seeds-per-trial", str(seeds_per_trial), "--confirm-top", str(confirm_top),
             "--confirm-seeds", str(confirm_seeds), "--metric", metric]  # fmt: skip
    tags = record.tags_for(config, prov, config.train.deterministic,
                           repeat_command(config.project, overrides, "", []))  # fmt: skip
    tags["xp.command"] = " ".join(["xp", "search", config.project, *overrides, *extra])
    tags.update({"xp.kind": "search", "xp.method": method, "xp.trials": str(trials),
                 "xp.study_name": name, "xp.metric": metric, "xp.prune": prune,
                 "xp.seeds_per_trial": str(seeds_per_trial),
                 "mlflow.runName": f"{config.project} search {method} x{trials}"})  # fmt: skip
    experiment_id = track.experiment_for(config.project, workspace)
    existing = None if os.environ.get("MLFLOW_RUN_ID") else _find_study_run(experiment_id, name)
    tracker = track.start_tracker(True, config.project, workspace, resume_run_id=existing,
                                  tags=tags, detached=True)  # fmt: skip
    if existing is None and not os.environ.get("MLFLOW_RUN_ID"):
        first = _find_study_run(experiment_id, name)  # another driver created one at once?
        if first != tracker.run_id:
            track.delete_run(tracker.run_id)
            existing = first
            tracker = track.start_tracker(True, config.project, workspace, resume_run_id=first,
                                          tags=tags, detached=True)  # fmt: skip
    os.environ.pop("MLFLOW_RUN_ID", None)  # the confirmation repeats open runs of their own
    study_run = tracker.run_id
    say(f"study run {study_run} {'resuming' if existing else 'started'} (Optuna study {name})")
    try:
        if existing is None:
            tracker.log_params(shared_params(config))
            tracker.log_text(space_path.read_text(), "search.yaml")
        base = [config.project, *overrides]
        run_trials(study, space, study_run=study_run, base=base, trials=trials,
                   seeds_per_trial=seeds_per_trial, metric=metric, prune=prune, storage=where,
                   executor=executor, workspace=workspace, numerics=config.train.numerics,
                   experiment_id=experiment_id, say=say, on_event=on_event)  # fmt: skip
        import optuna

        open_trials = [t.number for t in counted(study)
                       if t.state == optuna.trial.TrialState.RUNNING]  # fmt: skip
        if open_trials:
            numbers = ", ".join(map(str, open_trials))
            raise SearchError(f"trial(s) {numbers} did not finish (a seed was killed); run the "
                              "same command to continue them")  # fmt: skip
        fresh = range(seeds_per_trial + 1, seeds_per_trial + confirm_seeds + 1)
        confirmed = confirm(study, space, config, workspace, overrides=overrides,
                            study_run=study_run, top=confirm_top, seeds=fresh, metric=metric,
                            executor=executor, say=say, on_event=on_event)  # fmt: skip
        from xp.search import report as search_report

        summary = search_report.summarize(study, counted(study), space, confirmed, metric,
                                          config.project, overrides, study_run)  # fmt: skip
        summary["report_dir"] = str(search_report.record(tracker, summary, workspace))
        summary["study_run_id"] = study_run
        tracker.end("FINISHED")
        return summary
    except KeyboardInterrupt:
        tracker.end("KILLED")
        raise
    except SearchError:
        tracker.end("KILLED")  # (open trials: the same command continues the study)
        raise
    except BaseException:
        tracker.end("FAILED")
        raise


def confirm(study: Any, space: dict, config: Config, workspace: Workspace, *, overrides: list[str],
            study_run: str, top: int, seeds: range, metric: str, executor: Any, say: Progress,
            on_event: Any) -> list[dict[str, Any]]:  # fmt: skip
    """Re-run the `top` best finished trials' configurations as repeats on fresh seeds, nested
    under the study; each entry: the trial, its search score, the repeat's summary."""
    import optuna

    from xp.repeat import repeat

    complete = [t for t in counted(study) if t.state == optuna.trial.TrialState.COMPLETE]
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    complete.sort(key=lambda t: -t.value if maximize else t.value)
    if top > len(complete):
        say(f"only {len(complete)} trial(s) finished: confirming {len(complete)}, not {top}")
    out = []
    for t in complete[:top]:
        knobs = trial_overrides(t.params, space)
        say(f"confirming trial {t.number} ({metric} {t.value:.4f}) on seeds "
            f"{seeds.start}..{seeds.stop - 1}: {' '.join(knobs)}")  # fmt: skip
        conf = load_config(config.project, [*overrides, *knobs], workspace.projects)
        summary = repeat(conf, workspace, overrides=[*overrides, *knobs],
                         seeds_spec=",".join(map(str, seeds)), executor=executor,
                         extra_tags={"xp.study": study_run, "xp.stage": "confirm",
                                     "xp.trial": str(t.number), "mlflow.parentRunId": study_run},
                         on_event=on_event)  # fmt: skip
        out.append({"trial": t.number, "params": dict(t.params), "overrides": knobs,
                    "search_value": t.value, "repeat_id": summary["parent_run_id"],
                    "summary": summary})  # fmt: skip
    return out
