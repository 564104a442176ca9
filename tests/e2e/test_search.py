"""`xp search`: trials nested under a study run, the best configurations confirmed on fresh seeds,
ranked, reported; a kill -9 of the driver loses no trial and trains none twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import mlflow
import pytest

from tests.conftest import BIN, default_signals, run
from xp import stats

pytestmark = pytest.mark.e2e

FAST = ["train.epochs=4", "eval.every=5", "eval.patience=null", "train.checkpoint_every=5"]
ARGS = ["--trials", "4", "--jobs", "2", "--method", "tpe", "--confirm-top", "2",
        "--confirm-seeds", "2"]  # fmt: skip


def _runs(filter_string: str) -> list:
    exps = [e.experiment_id for e in mlflow.MlflowClient().search_experiments()]
    return mlflow.search_runs(exps, filter_string, output_format="list")


def test_a_search_confirms_its_best_on_fresh_seeds_and_survives_kill_9(repo):
    cmd = ["xp", "search", "digits", *FAST, *ARGS]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE, text=True,
                            stderr=subprocess.DEVNULL, preexec_fn=default_signals)  # fmt: skip
    deadline = time.monotonic() + 300
    for line in proc.stdout:  # the first two trials are told, the next two start: kill it
        if line.startswith("trial 2: ") or time.monotonic() > deadline:
            break
    time.sleep(1.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = _runs("tags.`xp.kind` = 'search'")
    assert len(first) == 1 and first[0].info.status == "RUNNING"  # killed: nothing closed it

    again = run(cmd, repo)  # the same command continues the study
    assert "resuming" in again.stdout and "winner's curse" in again.stdout, again.stdout
    study = mlflow.get_run(first[0].info.run_id)
    tags = study.data.tags
    assert study.info.status == "FINISHED" and tags["xp.kind"] == "search"
    assert tags["mlflow.runName"] == "digits search tpe x4"

    # four trials, each trained once (a killed trial resumed in its own run: every step once)
    trials = _runs(f"tags.`xp.study` = '{study.info.run_id}' and tags.`xp.stage` = 'search'")
    assert sorted(int(t.data.tags["xp.trial"]) for t in trials) == [0, 1, 2, 3]
    for t in trials:
        assert t.info.status == "FINISHED" and t.data.params["seed"] == "1"
        history = mlflow.MlflowClient().get_metric_history(t.info.run_id, "train/loss")
        steps = [m.step for m in history]
        assert sorted(steps) == sorted(set(steps)) and len(steps) == 40

    # the two best re-run as repeats nested under the study, on seeds no trial used
    summary = json.loads(mlflow.artifacts.load_text(
        f"runs:/{study.info.run_id}/report/summary.json"))  # fmt: skip
    values = {t["number"]: t["value"] for t in summary["trials"]}
    best = sorted(values, key=values.get, reverse=True)[:2]
    confirms = _runs(f"tags.`xp.study` = '{study.info.run_id}' and tags.`xp.stage` = 'confirm'")
    assert sorted(int(c.data.tags["xp.trial"]) for c in confirms) == sorted(best)
    for c in confirms:
        assert c.data.tags["xp.kind"] == "repeat" and c.data.tags["xp.seeds"] == "2,3"
        assert c.data.tags["mlflow.parentRunId"] == study.info.run_id
    assert tags["xp.winner"] in {c.info.run_id for c in confirms}
    # the winner's curse: the best trial's search score minus its mean on fresh seeds
    top = next(c for c in summary["confirmed"] if c["trial"] == best[0])
    assert top["gap"] == pytest.approx(values[best[0]] - top["confirmed"]["mean"])
    assert summary["search_winner_gap"] == pytest.approx(top["gap"])
    # the expected best by budget: the unbiased estimator over the finished trials
    curve = stats.expected_max_unbiased([values[n] for n in sorted(values)])
    assert summary["expected_max"]["values"] == pytest.approx(curve.tolist())
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(study.info.run_id, "report")}
    assert {"report/report.html", "report/expected_max.png", "report/search_vs_confirmed.png",
            "report/summary.json"} <= arts  # fmt: skip
    assert summary["winner"]["command"].startswith("xp repeat digits train.epochs=4")

    # promoting a confirmation records the study on the version
    run(["xp", "promote", tags["xp.winner"], "--name", "digits-searched", "--min-seeds", "2"],
        repo)  # fmt: skip
    (version,) = mlflow.MlflowClient().search_model_versions("name = 'digits-searched'")
    assert version.tags["xp.study"] == study.info.run_id


BAD = {
    "an empty space": (["--space", "empty.yaml"], "the search space is empty"),
    "a grid larger than --trials": (["--space", "grid.yaml", "--method", "grid"],
                                    "has 8 points, more than --trials 4"),
    "a grid over a continuous knob": (["--method", "grid"], "--method grid needs a finite space"),
    "--confirm-top over --trials": (["--confirm-top", "5"], "--confirm-top 5 is more than"),
    "no seeds per trial": (["--seeds-per-trial", "0"], "a trial needs at least 1 seed"),
    "an unknown method": (["--method", "bayes"], "--method bayes: unknown"),
    "an unknown pruner": (["--prune", "hyperband"], "--prune hyperband: unknown"),
    "a metric the runs do not log": (["--metric", "best/val/rmse"], "the runs do not log it"),
    "a misspelled knob": (["--space", "typo.yaml"], "unknown config key 'optim.lrr'"),
}  # fmt: skip


def test_a_bad_search_is_one_line_and_records_nothing(repo):
    (repo / "empty.yaml").write_text("# nothing\n")
    (repo / "grid.yaml").write_text("train.freeze_layers: {choice: [0, 1, 2, 3]}\n"
                                    "model.dropout: {choice: [0.1, 0.3]}\n")  # fmt: skip
    (repo / "typo.yaml").write_text("optim.lrr: {log_uniform: [1.0e-4, 1.0e-2]}\n")
    for case, (extra, expected) in BAD.items():
        args = ["--trials", "4", *extra]
        proc = run(["xp", "search", "digits", *FAST, *args], repo, check=False)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, (case, proc.stderr)
        assert expected in lines[0], (case, lines[0])
    assert _runs("attributes.status != 'X'") == []
    assert not (repo / "optuna.db").exists()
