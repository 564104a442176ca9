"""The repeat-runner: seeds as processes under a parent run, summary, resume, failures."""

import json
import shlex
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest

from tests.conftest import parent_id_in, run
from xp import stats
from xp.repeat import RepeatError, parse_seeds, plan_jobs
from xp.summary import SeedRun, seed_runs, summarize

FAST = ["train.epochs=2", "eval.every=5", "eval.patience=null"]


def test_parse_seeds():
    assert parse_seeds("3") == [1, 2, 3]
    assert parse_seeds("1,2,7") == [1, 2, 7]
    for bad in ("0", "x", "1,1", "-1,2"):
        with pytest.raises(RepeatError, match="--seeds"):
            parse_seeds(bad)


def _run(seed, status, outcome=None, start=0, f1=None):
    tags = {"xp.outcome": outcome} if outcome else {}
    return SimpleNamespace(
        info=SimpleNamespace(run_id=f"r{seed}-{start}", status=status, start_time=start),
        data=SimpleNamespace(params={"seed": str(seed)}, tags=tags,
                             metrics={"test/f1": f1} if f1 is not None else {}),
    )  # fmt: skip


def test_finished_seeds_are_reused_killed_resume_crashed_restart(tmp_path):
    children = [
        _run(1, "FINISHED", "ok", f1=0.8),
        _run(2, "KILLED"),
        _run(3, "FAILED", "failed"),  # NaN: a result, not retried
        _run(4, "FAILED", None, start=1),  # crashed
        _run(4, "FINISHED", "ok", start=0, f1=0.7),  # older run of seed 4 is not the latest
    ]
    runs = seed_runs(children, [1, 2, 3, 4, 5])
    assert [r.outcome for r in runs] == ["ok", "killed", "failed", "crashed", "crashed"]
    jobs = plan_jobs(runs, ["digits"], "P", 1, tmp_path)
    assert [j.seed for j in jobs] == [2, 4, 5]
    assert jobs[0].args[-2:] == ["--resume", "r2-0"]
    assert "--resume" not in jobs[1].args and "--group" in jobs[1].args


def test_summary_statistics_over_successful_and_all_seeds():
    runs = [SeedRun(s, f"r{s}", "FINISHED", "ok", {"test/f1": v, "best/val/f1": v + 0.01})
            for s, v in ((1, 0.80), (2, 0.84), (3, 0.82))]  # fmt: skip
    runs.append(SeedRun(4, "r4", "FINISHED", "failed", {"test/f1": 0.2, "best/val/f1": 0.2}))
    base = {"kind": "run", "id": "B", "values": [0.70, 0.72, 0.71]}
    s = summarize(runs, "test/f1", base)
    assert s["failed_seeds"] == [4]
    ok, every = s["stats"]["test/f1"]["successful"], s["stats"]["test/f1"]["all"]
    assert ok["n"] == 3 and every["n"] == 4
    assert ok["mean"] == pytest.approx(0.82) and every["mean"] == pytest.approx(0.665)
    assert (ok["ci95_low"], ok["ci95_high"]) == pytest.approx(stats.t_interval([0.8, 0.84, 0.82]))
    assert s["verdict"] == "holds"
    assert s["expected_max"]["values"][0] == pytest.approx(0.83)
    json.dumps(s)  # summary.json must serialise


def _repeat(repo, *args, env=None, check=True):
    return run(["xp", "repeat", "digits", *FAST, *args], repo, env=env, check=check)


def _children(parent_id):
    from xp.record.track import children_of

    return children_of(parent_id)


def test_repeat_records_parent_children_summary_and_reuses_on_rerun(digits_groups, monkeypatch):
    repo, env, ids = digits_groups["repo"], digits_groups["env"], digits_groups["ids"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    parent_id = ids["weak"]
    parent = mlflow.get_run(parent_id)
    tags, metrics = parent.data.tags, parent.data.metrics
    assert tags["xp.kind"] == "repeat" and tags["xp.seeds"] == "1,2,3"
    assert tags["xp.failed_seeds"] == "" and parent.info.status == "FINISHED"
    assert "seed" not in parent.data.params and parent.data.params["optim.lr"] == "0.001"
    children = _children(parent_id)
    assert len(children) == 3
    # readable names in the MLflow UI: what differs from digits' config.yaml, then seeds
    assert parent.info.run_name == "digits epochs=3 every=5 patience=null x3"
    assert sorted(c.info.run_name for c in children) == [
        f"digits epochs=3 every=5 patience=null s{s}" for s in (1, 2, 3)
    ]
    described = tags["mlflow.note.content"]  # the description the UI shows, in markdown
    mean, low = metrics["test/f1/mean"], metrics["test/f1/ci95_low"]
    assert f"**test/f1 = {mean:.4f}**, 95% CI [{low:.4f}, " in described
    assert "n = 3 of 3 seeds (1, 2, 3)" in described and "failed seeds: none" in described
    assert "verdict: none (no `--baseline` given)" in described
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent_id}
    assert {c.data.tags["xp.config_hash"] for c in children} == {tags["xp.config_hash"]}
    for key in ("test/f1", "test/accuracy", "best/val/f1", "test:shifted/f1"):  # (+ OOD sets)
        values = [c.data.metrics[key] for c in children]
        assert metrics[f"{key}/mean"] == pytest.approx(np.mean(values))
        assert metrics[f"{key}/std"] == pytest.approx(np.std(values, ddof=1))
        low, high = stats.t_interval(values)
        assert (metrics[f"{key}/ci95_low"], metrics[f"{key}/ci95_high"]) == pytest.approx(
            (low, high)
        )
        assert metrics[f"{key}/n"] == 3
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(parent_id, "report")}
    assert {"report/report.md", "report/report.html", "report/summary.json",
            "report/learning_curves.png", "report/final_metric.png"} <= arts  # fmt: skip
    html = mlflow.artifacts.load_text(f"runs:/{parent_id}/report/report.html")
    assert "data:image/png;base64," in html

    # every recorded command re-runs as written: the repeat's resumes it (nothing trained twice)
    strong = mlflow.get_run(ids["strong"]).data.tags["xp.command"]
    assert f"--baseline {parent_id}" in strong and "--metric test/f1" in strong
    again = run(shlex.split(strong), repo, env=env)
    assert parent_id_in(again.stdout) == ids["strong"] and "resuming" in again.stdout
    assert len(_children(ids["strong"])) == 3
    seed_command = children[0].data.tags["xp.command"]  # (into a store of its own: not a seed)
    other = {"MLFLOW_TRACKING_URI": f"sqlite:///{repo.parent / 'rerun.db'}"}
    rerun = run(shlex.split(seed_command), repo, env=other)
    assert rerun.stdout.splitlines()[-1].startswith("ok run ")

    rebuilt = run(["xp", "report", parent_id], repo, env=env)
    assert "test/f1" in rebuilt.stdout

    # the second configuration, with the first as its baseline, gets a verdict
    other = mlflow.get_run(ids["strong"])
    assert other.data.tags["xp.verdict"] == "holds"
    described = other.data.tags["mlflow.note.content"]
    assert f"baseline: run `{parent_id}`, mean {metrics['test/f1/mean']:.4f}" in described
    assert "verdict: **holds**: improvement " in described and "one-sided Welch p = " in described
    assert other.data.tags["xp.baseline"] == parent_id
    assert "verdict: holds" in digits_groups["stdout"]["strong"]
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(other.info.run_id, "report")}
    assert "report/baseline.png" in arts

    # the two configurations, ranked (issue 4): json from the CLI, and the mlflow entry point
    cmd = ["xp", "compare", "--project", "digits", "--format", "json", "--plot",
           str(repo / "forest.png"), "--log"]  # fmt: skip
    ranked = json.loads(run(cmd, repo, env=env).stdout)
    assert [g["n"] for g in ranked["groups"]] == [3, 3]  # reproductions are not extra seeds
    assert [g["params"]["optim.lr"] for g in ranked["groups"]] == ["0.003", "0.001"]
    assert (repo / "forest.png").stat().st_size > 0
    ood = json.loads(run([*cmd[:-3], "--metric", "test@noisy/f1"], repo, env=env).stdout)
    assert ood["metric"] == "test:noisy/f1" and [g["n"] for g in ood["groups"]] == [3, 3]
    run(["mlflow", "run", ".", "-e", "compare", "-P", "project=digits", "--env-manager", "local"],
        repo, env=env)  # fmt: skip
    exps = [e.experiment_id for e in mlflow.MlflowClient().search_experiments()]
    logged = mlflow.search_runs(exps, "tags.`xp.kind` = 'compare'", output_format="list")
    assert len(logged) == 1 and "compare/table.json" in {
        a.path for a in mlflow.MlflowClient().list_artifacts(logged[0].info.run_id, "compare")
    }


def test_a_seed_on_a_warm_worker_gives_the_metrics_it_gives_alone(digits_groups, monkeypatch):
    """The weak group ran seeds 1..3 on 2 warm workers: seed 3 came after another seed in the
    same process. Run alone (`xp train`, its recorded command, a new process) it gives the same
    final metrics, digit for digit: nothing leaked from one seed to the next."""
    repo, env, ids = digits_groups["repo"], digits_groups["env"], digits_groups["ids"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    kids = {int(c.data.params["seed"]): c for c in _children(ids["weak"])}
    alone_uri = f"sqlite:///{repo.parent / 'alone.db'}"
    proc = run(shlex.split(kids[3].data.tags["xp.command"]), repo,
               env={"MLFLOW_TRACKING_URI": alone_uri})  # fmt: skip
    alone_id = proc.stdout.splitlines()[-1].split()[-1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", alone_uri)
    alone = mlflow.get_run(alone_id).data.metrics
    final = {k: v for k, v in kids[3].data.metrics.items() if k.startswith(("test/", "best/"))}
    assert final and final == {k: alone[k] for k in final}


def test_seed_overrides_and_unknown_test_sets_are_refused(repo):
    proc = _repeat(repo, "seed=3", check=False)
    assert proc.returncode == 2 and "--seeds" in proc.stderr
    proc = _repeat(repo, "--metric", "test@nowhere/f1", check=False)
    assert (
        proc.returncode == 2
        and "--metric test:nowhere/f1: not a classification metric" in (proc.stderr)
        and "test:shifted/<m>, test:noisy/<m>" in proc.stderr
    )


def test_mlflow_run_repeat_entry_point_and_a_nan_seed_that_fails_alone(repo):
    cmd = ["mlflow", "run", ".", "-e", "repeat", "--env-manager", "local", "-P",
           "project=digits", "-P", "seeds=2", "-P", "jobs=2", "-P", "train.epochs=2", "-P",
           "eval.every=5"]  # fmt: skip
    proc = run(cmd, repo, env={"XP_FAULT_NAN_SEEDS": "2"})  # seed 2's loss turns NaN
    client = mlflow.MlflowClient()
    exps = [e.experiment_id for e in client.search_experiments()]
    parents = mlflow.search_runs(exps, "tags.`xp.kind` = 'repeat'", output_format="list")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.data.tags["mlflow.project.entryPoint"] == "repeat"  # MLflow's run is the parent
    assert parent.info.status == "FINISHED"
    # the NaN seed fails alone: recorded failed, left out of the statistics, named
    assert parent.data.tags["xp.failed_seeds"] == "2"
    assert parent.data.metrics["test/f1/n"] == 1
    outcomes = {
        c.data.params["seed"]: c.data.tags["xp.outcome"] for c in _children(parent.info.run_id)
    }
    assert outcomes == {"1": "ok", "2": "failed"}
    assert "failed seeds: 2" in proc.stdout
