"""Reproduce: rebuild a recorded run's code and data, re-run it, compare every final metric."""

import json
import math
import re
import shutil

import mlflow
import numpy as np
import pytest

from tests.conftest import FAST_DIGITS, git, run
from xp.judge import (
    DIFFERS,
    IDENTICAL,
    WITHIN,
    compare_record,
    compare_values,
    environment_changes,
    overall,
)


def test_verdicts_identical_within_tolerance_and_differs():
    same = compare_values({"test/f1": 0.8, "x": math.nan}, {"test/f1": 0.8, "x": math.nan}, 0.0)
    assert overall(same, []) == IDENTICAL and [r["diff"] for r in same] == [0.0, 0.0]
    close = compare_values({"test/f1": 0.8}, {"test/f1": 0.8 + 1e-7}, 1e-6)
    assert overall(close, []) == WITHIN and close[0]["diff"] == pytest.approx(1e-7)
    assert overall(compare_values({"test/f1": 0.8}, {"test/f1": 0.81}, 1e-6), []) == DIFFERS
    missing = compare_values({"test/f1": 0.8}, {}, 1.0)
    assert missing[0]["reproduced"] is None and overall(missing, []) == DIFFERS
    assert overall(same, ["xp.git.commit: a -> b"]) == DIFFERS
    assert compare_record({"xp.data.train.md5": "a", "xp.config_hash": "h"},
                          {"xp.data.train.md5": "b", "xp.config_hash": "h"}) == [
        "xp.data.train.md5: a -> b"]  # fmt: skip
    assert environment_changes({"xp.env.torch": "2.13.0", "xp.env.device": "cpu"},
                               {"xp.env.torch": "2.14.0", "xp.env.device": "cpu"}) == [
        "xp.env.torch: 2.13.0 -> 2.14.0"]  # fmt: skip


def _run_id(stdout: str) -> str:
    return re.search(r"^run ([0-9a-f]{32})", stdout, re.M).group(1)


def test_reproduce_after_code_and_data_changed_is_identical(repo, tmp_path):
    # recorded on a dirty tree: the diff is part of the record
    cfg = repo / "projects/digits/config.yaml"
    cfg.write_text(cfg.read_text().replace("dropout: 0.1 ", "dropout: 0.2 "))
    (repo / "xp/scratch_idea.py").write_text("print('an idea')\n")  # untracked source
    env = repo / "env311"  # a stray virtualenv git does not ignore (not named .venv)
    (env / "lib/site-packages/big").mkdir(parents=True)
    (env / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (env / "lib/site-packages/big/wheel.py").write_text("x = 1\n" * 100_000)
    (repo / "weights.bin").write_bytes(b"\0" * 2**21)  # 2 MiB of binary: not source either
    proc = run(["xp", "train", "digits", "seed=3", *FAST_DIGITS], repo)
    original_id = _run_id(proc.stdout)
    assert proc.stderr.count("left out of the recorded diff") == 1  # warned once, at the start
    original = mlflow.get_run(original_id)
    assert original.data.tags["xp.git.dirty"] == "true"
    diff = mlflow.artifacts.load_text(f"runs:/{original_id}/provenance/git.diff")
    assert "-  dropout: 0.1 " in diff and "+  dropout: 0.2 " in diff
    assert "xp/scratch_idea.py" in diff and "+print('an idea')" in diff
    assert "env311" not in diff and len(diff) < 10_000
    skipped = json.loads(mlflow.artifacts.load_text(
        f"runs:/{original_id}/provenance/untracked_skipped.json"))  # fmt: skip
    assert {e["path"]: e["reason"] for e in skipped} == {
        "env311/": "environment", "weights.bin": "larger than 1 MiB"}  # fmt: skip
    git(repo, "checkout", "--", "projects/digits/config.yaml")
    (repo / "xp/scratch_idea.py").unlink()

    # then the trainer changes (a new commit), the data is edited, and the DVC cache is gone:
    # the data comes back from the DVC remote
    trainer = repo / "xp/train/evaluation.py"  # where the loss is
    trainer.write_text(trainer.read_text().replace(
        "cross_entropy(logits.float(), labels)", "cross_entropy(logits.float(), labels, "
        "label_smoothing=0.1)"))  # fmt: skip
    git(repo, "commit", "-qam", "label smoothing")
    with np.load(repo / "data/digits/train.npz") as z:
        np.savez(repo / "data/digits/train.npz", X=z["X"][:150], y=z["y"][:150])
    run(["dvc", "remote", "add", "-d", "store", str(tmp_path / "dvc-remote")], repo)
    run(["dvc", "push", "-q"], repo)
    shutil.rmtree(repo / ".dvc/cache")

    cmd = ["mlflow", "run", ".", "-e", "reproduce", "-P", f"run_id={original_id}",
           "--env-manager", "local"]  # fmt: skip
    proc = run(cmd, repo)
    assert "verdict: identical" in proc.stdout, proc.stdout
    new = mlflow.search_runs(
        [original.info.experiment_id], f"tags.`xp.reproduces` = '{original_id}'",
        output_format="list",
    )  # fmt: skip
    assert len(new) == 1
    tags = new[0].data.tags
    assert tags["xp.reproduce.verdict"] == "identical"
    assert tags["xp.git.commit"] == original.data.tags["xp.git.commit"]
    assert tags["xp.git.diff_md5"] == original.data.tags["xp.git.diff_md5"]
    assert tags["xp.data.train.md5"] == original.data.tags["xp.data.train.md5"]
    assert new[0].data.metrics["test/f1"] == original.data.metrics["test/f1"]
    table = mlflow.artifacts.load_text(f"runs:/{new[0].info.run_id}/reproduce/comparison.md")
    assert "| test/f1 |" in table and "identical" in table
    assert git(repo, "worktree", "list").count("\n") == 0  # the worktree is gone
    assert git(repo, "log", "-1", "--format=%s") == "label smoothing"  # the tree is untouched


def test_a_training_run_under_other_kernels_differs_and_says_why(repo):
    """What another CPU model does to a run, on this one: MKL's compatible code path, ATen's
    baseline kernels and oneDNN's AVX2 ones instead of the CPU's own. The final numbers differ in
    their low bits; that is expected, and the verdict names the environment that explains it.
    (Which knob moves which bits depends on the CPU: on an Intel Xeon MKL's did; on an AMD EPYC
    ATen's and oneDNN's did, and MKL's compatible path with ATen's baseline alone happened to
    give the EPYC's own bits. All three together moved them on both.)"""
    original_id = _run_id(run(["xp", "train", "digits", "seed=2", *FAST_DIGITS], repo).stdout)
    other = {"MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "default",
             "ONEDNN_MAX_CPU_ISA": "AVX2"}  # fmt: skip
    proc = run(["xp", "reproduce", original_id], repo, env=other, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("verdict:"))
    assert line.startswith("verdict: differs (expected: "), line
    assert "numerics_env " in line and "MKL_CBWR=COMPATIBLE" in line
    assert "determinism bug" not in proc.stderr
    original = mlflow.get_run(original_id)
    (new,) = mlflow.search_runs(
        [original.info.experiment_id],
        f"tags.`xp.reproduces` = '{original_id}'",
        output_format="list",
    )
    tags = new.data.tags
    assert tags["xp.reproduce.verdict"] == "differs"
    assert tags["xp.reproduce.cause"].startswith("expected: ")
    assert line.startswith(f"verdict: differs ({tags['xp.reproduce.cause']})"), line
    assert tags["xp.env.cpu_capability"] == "DEFAULT"
    assert tags["xp.env.numerics_env"].count("=") >= 3  # the variables, as recorded
    # same code, data and seeds: only the kernels moved the numbers, and only in the low bits
    for key in ("xp.config_hash", "xp.git.commit", "xp.data.train.md5"):
        assert tags[key] == original.data.tags[key]
    rows = json.loads(mlflow.artifacts.load_text(
        f"runs:/{new.info.run_id}/reproduce/comparison.json"))["rows"]  # fmt: skip
    moved = {r["metric"]: r["diff"] for r in rows if r["verdict"] == "differs"}
    assert moved and max(abs(d) for d in moved.values()) < 1e-3, moved


def _recorded_run(tags: dict) -> str:
    client = mlflow.MlflowClient()
    exp = client.create_experiment("digits")
    r = client.create_run(exp, tags={"xp.kind": "train", "xp.command": "xp train digits", **tags})
    client.set_terminated(r.info.run_id, "FINISHED")
    return r.info.run_id


def test_a_removed_commit_fails_with_its_clear_error(repo):
    (repo / "notes.txt").write_text("an experiment branch\n")
    git(repo, "add", "notes.txt")
    git(repo, "commit", "-qm", "soon gone")
    gone = git(repo, "rev-parse", "HEAD")
    git(repo, "reset", "-q", "--hard", "HEAD~1")
    git(repo, "reflog", "expire", "--expire=now", "--all")
    git(repo, "gc", "-q", "--prune=now")
    run_id = _recorded_run({"xp.git.commit": gone, "xp.git.dirty": "false"})
    proc = run(["xp", "reproduce", run_id], repo, check=False)
    assert proc.returncode == 2
    assert f"commit {gone} of run {run_id} no longer exists" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_data_in_neither_cache_nor_remote_says_which(repo):
    head = git(repo, "rev-parse", "HEAD")
    run_id = _recorded_run({"xp.git.commit": head, "xp.git.dirty": "false",
                            "xp.data.train.path": "data/digits/train.npz",
                            "xp.data.train.md5": "0" * 32})  # fmt: skip
    proc = run(["xp", "reproduce", run_id], repo, check=False)
    assert proc.returncode == 2
    assert "data train (data/digits/train.npz, md5 " + "0" * 32 + ") is in neither" in proc.stderr
    assert "none is configured" in proc.stderr
    assert git(repo, "worktree", "list").count("\n") == 0


def test_fresh_seeds_under_other_kernels_get_a_statistical_verdict(digits_groups, monkeypatch):
    """Where bits cannot match (other kernels: here ATen's baseline ones; another CPU, a GPU),
    the question is whether the result reproduces: TOST of the repeat's metric, fresh seeds."""
    from xp import stats
    from xp.record.track import children_of
    from xp.repeat import recorded_seed_runs
    from xp.summary import successful_values

    repo, env, ids = digits_groups["repo"], digits_groups["env"], digits_groups["ids"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    proc = run(["xp", "reproduce", ids["weak"], "--seeds", "2", "--margin", "0.05", "--jobs", "2"],
               repo, env={**env, "ATEN_CPU_CAPABILITY": "default"}, check=False)  # fmt: skip
    original = mlflow.get_run(ids["weak"])
    (parent,) = mlflow.search_runs(
        [original.info.experiment_id],
        f"tags.`xp.reproduces` = '{ids['weak']}' and tags.`xp.reproduce.margin` = '0.05'",
        output_format="list",
    )  # fmt: skip
    kids = children_of(parent.info.run_id)
    assert sorted(int(k.data.params["seed"]) for k in kids) == [4, 5]  # after the recorded 1..3
    assert {k.data.tags["xp.env.cpu_capability"] for k in kids} == {"DEFAULT"}
    # the verdict is the one TOST gives on the two seed distributions, recomputed here
    before = list(successful_values(recorded_seed_runs(original)[0], "test/f1").values())
    after = [k.data.metrics["test/f1"] for k in kids]
    expected = stats.tost(before, after, 0.05)
    tags = parent.data.tags
    assert tags["xp.reproduce.verdict"] == expected["verdict"]
    assert float(tags["xp.reproduce.p_value"]) == pytest.approx(expected["p_value"], rel=1e-3)
    assert f"verdict: {expected['verdict']} (margin +-0.05" in proc.stdout
    assert proc.returncode == (0 if expected["verdict"] == "equivalent" else 1)
    report = json.loads(mlflow.artifacts.load_text(
        f"runs:/{parent.info.run_id}/reproduce/comparison.json"))  # fmt: skip
    assert report["equivalence"]["n_a"] == 3 and report["equivalence"]["n_b"] == 2
    assert "Equivalence of test/f1" in mlflow.artifacts.load_text(
        f"runs:/{parent.info.run_id}/reproduce/comparison.md"
    )


def test_a_tree_recorded_before_the_wings_reproduces_on_processes(tmp_path):
    """Warm workers start the recorded tree's `xp.execute.worker`: a tree without it (recorded
    before warm workers, or before the modules moved into wings, when the worker was
    `xp/worker.py`) runs a process per seed, whatever was asked."""
    from xp.record.rebuild import executor_for

    (tmp_path / "xp").mkdir()
    (tmp_path / "xp" / "worker.py").write_text("")
    assert executor_for(tmp_path, "warm") == "process"
    (tmp_path / "xp" / "execute").mkdir()
    (tmp_path / "xp" / "execute" / "worker.py").write_text("")
    assert executor_for(tmp_path, "warm") == "warm"
    assert executor_for(tmp_path, "process") == "process"


def _stored_repeat(values: list[float], metric: str = "test/f1", group: str | None = None,
                   experiment: str | None = None) -> tuple[str, list[str]]:  # fmt: skip
    """A finished repeat run (or, with `group`, more seed runs under that parent) in the store,
    its seeds' runs holding `values`: what a reproduction reads, without training anything."""
    client = mlflow.MlflowClient()
    exp = experiment or client.create_experiment("digits")
    seeds = list(range(1, len(values) + 1))
    parent = group or client.create_run(exp, tags={
        "xp.kind": "repeat", "xp.metric": metric, "xp.seeds": ",".join(map(str, seeds)),
        "xp.git.commit": "0" * 40, "xp.git.dirty": "false"}).info.run_id  # fmt: skip
    kids = []
    for seed, value in zip(seeds, values):
        kid = client.create_run(
            exp,
            tags={
                "xp.kind": "train",
                "xp.group": parent,
                "mlflow.parentRunId": parent,
                "xp.outcome": "ok",
            },
        )
        client.log_param(kid.info.run_id, "seed", seed)
        client.log_metric(kid.info.run_id, metric, value)
        client.set_terminated(kid.info.run_id, "FINISHED")
        kids.append(kid.info.run_id)
    client.set_terminated(parent, "FINISHED")
    return parent, kids


@pytest.mark.parametrize("margin", ["1", "0"])
def test_a_margin_out_of_range_is_one_line_exit_2_and_nothing_recorded(tmp_path, margin):
    """A margin as wide as a [0, 1] metric's whole range makes any two results `equivalent`; one
    <= 0 can never pass. Refused before anything is built or recorded."""
    repeat_id, _ = _stored_repeat([0.61, 0.55, 0.43])
    before = mlflow.search_runs(search_all_experiments=True, output_format="list")
    proc = run(["xp", "reproduce", repeat_id, "--margin", margin], tmp_path, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("error: ")
    assert f"--margin {margin}" in proc.stderr
    if margin == "1":
        assert "test/f1 lies in [0, 1]" in proc.stderr and "below 1" in proc.stderr
    after = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert len(after) == len(before)  # no reproduction's run, no project run
    assert not (tmp_path / ".xp").exists()  # no worktree either


def test_a_percentage_under_a_unit_metric_name_may_take_a_margin_above_1():
    from types import SimpleNamespace

    from xp.reproduce import ReproduceError, check_margin

    def seeds(*values):
        return [SimpleNamespace(data=SimpleNamespace(metrics={"test/accuracy": v})) for v in values]

    check_margin(2.0, "test/accuracy", seeds(81.0, 84.5))  # a script logging percent: its range
    check_margin(2.0, "test/loss", seeds(0.4, 0.5))  # unbounded
    check_margin(0.5, "test/accuracy", seeds(0.81, 0.84))
    with pytest.raises(ReproduceError, match=r"test/accuracy lies in \[0, 1\]"):
        check_margin(1.0, "test/accuracy", seeds(0.81, 0.84))


def test_fresh_seeds_too_few_for_a_default_margin_that_means_anything_are_refused():
    from types import SimpleNamespace

    from xp.judge import ReproduceError, check_default_margin

    def seeds(*values):
        def one(i, v):
            data = SimpleNamespace(params={"seed": str(i)}, metrics={"test/f1": v},
                                   tags={"xp.outcome": "ok"})  # fmt: skip
            return SimpleNamespace(
                data=data, info=SimpleNamespace(run_id=f"r{i}", status="FINISHED", start_time=0)
            )

        return [one(i, v) for i, v in enumerate(values)]

    repeat = SimpleNamespace(data=SimpleNamespace(tags={"xp.metric": "test/f1"}))
    with pytest.raises(ReproduceError, match=r"2 recorded vs 2 fresh seeds resolve only \+-1"):
        check_default_margin(repeat, seeds(0.5, 0.6), 2)  # +-1.01: any two F1s are within it
    check_default_margin(repeat, seeds(0.5, 0.6, 0.55), 2)  # +-0.37: wide, said, allowed


def test_the_default_margin_is_what_the_seeds_resolve_and_the_bound_is_recorded():
    """Without --margin: the margin 5 vs 5 seeds resolve (2.47 sd of the original), the bound
    beside it, both on the reproduction's parent and in its verdict line."""
    from xp import stats
    from xp.judge import to_markdown, verdict_line
    from xp.record import track
    from xp.reproduce import _equivalence, _originals, _record_equivalence

    before = [0.61, 0.55, 0.43, 0.58, 0.47]
    after = [0.57, 0.52, 0.60, 0.45, 0.55]
    original_id, _ = _stored_repeat(before)
    original = track.get_run(original_id)
    exp = original.info.experiment_id
    group, _ = _stored_repeat(before[:1], experiment=exp)  # the reproduction's parent
    new_ids = dict(zip(range(1, 6), _stored_repeat(after, group=group, experiment=exp)[1]))
    result = _equivalence(original, _originals(original), new_ids, None)
    eq = result["equivalence"]
    sd = float(np.std(before, ddof=1))
    assert eq["margin_default"] and eq["margin"] == pytest.approx(2.47 * sd, rel=0.01)
    expected = stats.tost(before, after, eq["margin"])
    assert result["verdict"] == expected["verdict"] == "equivalent"
    assert eq["bound"] == pytest.approx(expected["bound"]) and eq["bound"] < eq["margin"]
    line = verdict_line(result)
    assert line.startswith(f"equivalent (margin +-{eq['margin']:.4g} test/f1, the default: "
                           f"what 5 vs 5 seeds of sd {sd:.3g} can resolve; the tightest margin "
                           f"these seeds support: +-{eq['bound']:.3g}; p="), line  # fmt: skip
    _record_equivalence(group, {**result, "original": original_id, "tolerance": 0.0, "rows": [],
                                "mismatches": []})  # fmt: skip
    tags = track.get_run(group).data.tags
    assert float(tags["xp.reproduce.margin"]) == pytest.approx(eq["margin"], rel=1e-5)
    assert float(tags["xp.reproduce.bound"]) == pytest.approx(eq["bound"], rel=1e-3)
    assert tags["xp.reproduce.verdict"] == "equivalent"
    table = to_markdown({**result, "original": original_id, "tolerance": 0.0, "rows": [],
                         "mismatches": []})  # fmt: skip
    assert f"Equivalence bound (the tightest margin these seeds support): +-{eq['bound']:.6g}" in (
        table
    )
    given = _equivalence(original, _originals(original), new_ids, 0.05)
    assert not given["equivalence"]["margin_default"] and given["verdict"] != "equivalent"
    assert "the default" not in verdict_line(given)
