"""`xp search` shared: a study in a team server's PostgreSQL, two drivers on one study, and the
`mlflow run -e search` entry point (a file of its own, so that the suite's two workers share the
search tests)."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import BIN, run
from tests.e2e.test_search import FAST, _runs

pytestmark = pytest.mark.e2e


def test_a_study_on_a_team_server_lives_in_postgresql_and_a_rerun_trains_nothing(
    repo, team_server, monkeypatch
):
    from tests.e2e.conftest import _drop
    from xp.record.server import ensure_database

    env = team_server["env"]
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cmd = ["xp", "search", "digits", *FAST, "--trials", "2", "--jobs", "2", "--confirm-top", "1",
           "--confirm-seeds", "2"]  # fmt: skip
    proc = run(cmd, repo, check=False)  # a server holds no Optuna study: say what to give
    assert proc.returncode == 2 and "needs a database every machine reaches" in proc.stderr
    storage = team_server["database"] + "_study"
    ensure_database(storage)
    try:
        first = run([*cmd, "--storage", storage], repo)
        assert "winner's curse" in first.stdout
        count = len(_runs("attributes.status != 'X'"))
        again = run([*cmd, "--storage", storage], repo)  # the same study: nothing trains again
        assert "resuming" in again.stdout and "trial 0:" not in again.stdout, again.stdout
        assert len(_runs("attributes.status != 'X'")) == count
        import optuna

        (summary,) = optuna.get_all_study_summaries(storage)
        assert summary.n_trials == 2 and summary.study_name.startswith("xp-digits-")
    finally:
        _drop(storage.rsplit("/", 1)[-1])


def test_the_mlflow_run_search_entry_point(repo):
    run(["mlflow", "run", ".", "-e", "search", "-P", "project=digits", "-P", "trials=2", "-P",
         "jobs=2", "-P", "confirm_top=1", "-P", "confirm_seeds=2", "-P", "train.epochs=3",
         "--env-manager", "local", "--experiment-name", "digits"], repo)  # fmt: skip
    (study,) = _runs("tags.`xp.kind` = 'search'")
    assert study.info.status == "FINISHED" and study.data.tags["mlflow.project.entryPoint"] == (
        "search"
    )
    assert study.data.params["train.epochs"] == "3" and study.data.tags["xp.winner"]
    trials = _runs(f"tags.`xp.study` = '{study.info.run_id}' and tags.`xp.stage` = 'search'")
    assert len(trials) == 2


def test_two_drivers_share_one_study_and_train_no_trial_twice(repo):
    """Two machines on one study, here two processes on one: one study run, the budget kept."""
    cmd = ["xp", "search", "digits", "train.epochs=3", "eval.every=5", "eval.patience=null",
           "--trials", "4", "--jobs", "1", "--confirm-top", "0"]  # fmt: skip
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    drivers = [subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]  # fmt: skip
    outputs = [d.communicate(timeout=600) for d in drivers]
    assert [d.returncode for d in drivers] == [0, 0], outputs
    (study,) = _runs("tags.`xp.kind` = 'search'")
    trials = _runs(f"tags.`xp.study` = '{study.info.run_id}' and tags.`xp.stage` = 'search'")
    assert sorted(int(t.data.tags["xp.trial"]) for t in trials) == [0, 1, 2, 3]
    assert {t.info.status for t in trials} == {"FINISHED"}
    told = [line for out, _ in outputs for line in out.splitlines() if " = " in line
            and line.startswith("trial ")]  # fmt: skip
    assert len(told) == 4  # each trial trained and told by one driver
