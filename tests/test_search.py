"""The pieces of `xp search` that run inside a trial: its tags and the pruner's hook."""

from __future__ import annotations

import json

import mlflow
import optuna
import pytest

from tests.conftest import FAST_DIGITS, merged
from xp.config import load_config
from xp.search import study as search
from xp.train.loop import train
from xp.train.pruning import hook_from_env


def test_a_trial_the_median_pruner_stops_ends_pruned_untested_and_unranked(repo, monkeypatch):
    storage = f"sqlite:///{repo.parent / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize",
                                pruner=search.make_pruner("median"))  # fmt: skip
    for _ in range(search.STARTUP_TRIALS):  # finished trials, excellent at every evaluation
        done = study.ask()
        for step in range(5, 31, 5):
            done.report(0.99, step)
        study.tell(done, 0.99)
    trial = study.ask()
    monkeypatch.setenv(search.STORAGE_ENV, storage)
    monkeypatch.setenv(search.STUDY_ENV, "s")
    monkeypatch.setenv(search.TRIAL_ENV, str(trial.number))
    monkeypatch.setenv(search.METRIC_ENV, "f1")
    monkeypatch.setenv(search.TAGS_ENV, json.dumps({"xp.study": "S", "xp.trial": "1",
                                                    "xp.stage": "search"}))  # fmt: skip
    config = load_config("digits", merged(*FAST_DIGITS), repo / "projects")
    result = train(config, repo, should_stop=hook_from_env())  # as a trial's `xp train` does
    assert (result.outcome, result.status, result.steps) == ("pruned", "FINISHED", 5)
    run = mlflow.get_run(result.run_id)
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["xp.outcome"] == "pruned" and tags["xp.pruned_at_step"] == "5"
    assert (tags["xp.study"], tags["xp.trial"], tags["xp.stage"]) == ("S", "1", "search")
    assert "best/val/f1" in metrics and not any(k.startswith("test/") for k in metrics)
    # what the trial reported is in the study: one evaluation, then the pruner's verdict
    reported = study.trials[trial.number].intermediate_values
    assert list(reported) == [5] and reported[5] == pytest.approx(metrics["best/val/f1"])
    from xp.compare import SUCCESS

    assert tags["xp.outcome"] not in SUCCESS  # never ranked as finished


def test_outcome_of_a_trial_from_its_seeds():
    from xp.summary import SeedRun

    def seeds(*outcomes, value=0.5):
        return [SeedRun(i, f"r{i}", "FINISHED", o, {"best/val/f1": value}) for i, o in
                enumerate(outcomes, 1)]  # fmt: skip

    assert search._outcome(seeds("ok", "early_stopped"), "best/val/f1") == ("complete", 0.5)
    assert search._outcome(seeds("ok", "killed"), "best/val/f1") == ("open", None)
    assert search._outcome(seeds("pruned"), "best/val/f1") == ("pruned", None)
    assert search._outcome(seeds("ok", "failed"), "best/val/f1") == ("fail", None)
    assert search._outcome(seeds("ok"), "best/val/loss") == ("fail", None)  # not logged


def test_a_trial_lookup_reads_that_trial_runs_only(monkeypatch, tmp_path):
    """The driver asks the store for one trial's runs, not for every child of the study (which
    made each trial's lookup grow with the trials done); resume and planning see the same."""
    from xp.record import track

    client = mlflow.MlflowClient()
    exp = client.create_experiment("digits", artifact_location=tmp_path.as_uri())
    study = client.create_run(exp).info.run_id

    def trial_run(number: int, group: str = study, status: str = "FINISHED") -> str:
        tags = {"xp.group": group, "xp.trial": str(number)}
        if status == "FINISHED":
            tags["xp.outcome"] = "ok"
        run_id = client.create_run(exp, tags=tags).info.run_id
        client.log_param(run_id, "seed", "1")
        client.log_metric(run_id, "best/val/f1", 0.5 + number / 100)
        client.set_terminated(run_id, status)
        return run_id

    ids = {n: trial_run(n) for n in range(12)}
    trial_run(3, group="another-study")  # another study's trial 3
    killed = trial_run(12, status="KILLED")  # a driver killed mid-trial: resumed in its run
    read: list = []
    search_runs = track.search_runs

    def spy(*args):
        found = search_runs(*args)
        read.extend(r.info.run_id for r in found)
        return found

    monkeypatch.setattr(track, "search_runs", spy)
    (got,) = search._trial_runs(study, 3, [1], exp)
    assert (got.run_id, got.outcome, got.metrics["best/val/f1"]) == (ids[3], "ok", 0.53)
    assert read == [ids[3]]  # the store handed back trial 3's run alone
    (resumed,) = search._trial_runs(study, 12, [1], exp)
    assert (resumed.run_id, resumed.outcome) == (killed, "killed")
    (new,) = search._trial_runs(study, 13, [1], exp)  # not trained yet: to start
    assert new.run_id is None and new.outcome == "crashed"
    assert read == [ids[3], killed]
