"""Folds and resampled splits crossed with seeds (`xp repeat --folds K` / `--resamples N`): the
rows each fold gets, the statistics over folds (variance decomposition, the corrected resampled
t-test) and a real folds repeat: recorded, resumed after a kill, compared, refused when asked
wrongly."""

from __future__ import annotations

import json
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest
from scipy import stats as sps

from tests.conftest import FAST_DIGITS, merged, parent_id_in, run
from xp import stats
from xp.config import ConfigError, config_hash, load_config
from xp.registry import Policy, evaluate
from xp.train import folds

PROJECTS = __import__("pathlib").Path(__file__).resolve().parents[1] / "projects"


# -- the rows of a fold ----------------------------------------------------------------------
def test_kfold_partitions_the_pool_stratified_and_drawn_from_the_split_seed_alone():
    targets = np.repeat(np.arange(4), [30, 30, 20, 20])
    parts = [folds.indices(targets, 25, "kfold", 5, i, seed=7, stratify=True) for i in range(5)]
    validation = np.concatenate([va for _, va in parts])
    assert sorted(validation) == list(range(100))  # every row validated once, in one fold
    for tr, va in parts:
        assert set(tr).isdisjoint(va) and len(tr) + len(va) == 100
        assert np.bincount(targets[va]).tolist() == [6, 6, 4, 4]  # each fold keeps the classes
    again = folds.indices(targets, 25, "kfold", 5, 3, seed=7, stratify=True)
    other = folds.indices(targets, 25, "kfold", 5, 3, seed=8, stratify=True)
    assert folds.index_md5(*again) == folds.index_md5(*parts[3])
    assert folds.index_md5(*other) != folds.index_md5(*parts[3])
    tr, va = folds.indices(targets, 25, "resample", 10, 9, seed=7, stratify=True)
    assert len(va) == 25 and len(tr) == 75  # a resample keeps the files' own sizes
    assert folds.index_md5(tr, va) != folds.index_md5(
        *folds.indices(targets, 25, "resample", 10, 8, seed=7, stratify=True)
    )
    with pytest.raises(folds.FoldError, match="a class has 2 rows"):
        folds.indices(np.array([0] * 20 + [1, 1]), 5, "kfold", 5, 0, seed=1, stratify=True)


def test_texts_pool_and_arrays_of_other_shapes_do_not():
    assert folds.pool(["a", "b"], ["c"]) == ["a", "b", "c"]
    (tr, _), (va, _), info = folds.resplit((["a", "b", "c"], np.array([0, 1, 0])),
                                           (["d"], np.array([1])),
                                           type("C", (), {"kind": "kfold", "count": 2, "index": 1}),
                                           3, "regression")  # fmt: skip
    assert sorted(tr + va) == ["a", "b", "c", "d"] and info["pool"] == 4
    assert folds.pool(np.zeros((2, 3)), np.ones((1, 3))).shape == (3, 3)
    with pytest.raises(folds.FoldError, match="cannot be pooled"):
        folds.pool(np.zeros((2, 3)), np.zeros((1, 4)))
    with pytest.raises(folds.FoldError, match="different kinds"):
        folds.pool(["a"], np.zeros((1, 3)))


def test_the_fold_is_the_design_not_the_configuration():
    fold = ["data.resplit.kind=kfold", "data.resplit.count=5", "data.resplit.index=3"]
    plain, folded = load_config("digits", [], PROJECTS), load_config("digits", fold, PROJECTS)
    assert config_hash(plain) == config_hash(folded)  # every fold of one configuration: one hash
    with pytest.raises(ConfigError, match=r"index=5 is not one of the 5 folds \(0..4\)"):
        load_config("digits", [*fold[:2], "data.resplit.index=5"], PROJECTS)
    with pytest.raises(ConfigError, match="cannot be pooled"):
        load_config("digits", [*fold, "data.poolable=false"], PROJECTS)


# -- statistics over folds x seeds ----------------------------------------------------------------
def test_the_corrected_resampled_t_test_is_nadeau_and_bengios():
    d = [0.02, 0.01, 0.03, 0.015, 0.025]
    got = stats.corrected_t(d, ratio=0.25)
    se = np.sqrt((1 / 5 + 0.25) * np.var(d, ddof=1))
    assert got["se"] == pytest.approx(se) and got["df"] == 4
    assert got["p_value"] == pytest.approx(sps.t.sf(np.mean(d) / se, 4))
    plain = sps.ttest_1samp(d, 0, alternative="greater").pvalue
    assert got["p_value"] > plain  # the correction widens: folds are not independent


def test_variance_components_recover_which_source_dominates():
    rng = np.random.default_rng(0)
    split, seed = rng.normal(0, 0.05, 12), rng.normal(0, 0.01, 12)
    values = {(k, s): 0.8 + split[k] + seed[s] + rng.normal(0, 0.005)
              for k in range(12) for s in range(12)}  # fmt: skip
    vc = stats.variance_components(values)
    assert vc["dominant"] == "split" and vc["share"]["split"] > 0.8
    assert vc["variance"]["split"] == pytest.approx(np.var(split, ddof=1), rel=0.1)
    assert vc["variance"]["seed"] == pytest.approx(np.var(seed, ddof=1), rel=0.3)
    assert "run more splits" in vc["advice"]
    same = stats.variance_components({(k, s): 0.5 for k in range(3) for s in range(3)})
    assert same["dominant"] is None and "no variance" in same["advice"]
    assert "too few" in stats.variance_components({(0, 1): 0.5, (1, 1): 0.6})["error"]


def test_over_folds_and_seeds_the_a_vs_a_false_positive_rate_stays_under_alpha():
    """Two arms of one configuration on the same folds, each under its own seeds. A seed's effect
    is the same on every fold (real digits runs: 70-80% of the variance), and the folds' own
    differences are correlated (they share training rows). Over folds alone, even corrected, the
    verdict says `holds` far too often; over folds and seeds, it keeps to alpha."""
    rng = np.random.default_rng(1)
    joint = folds_only = 0
    trials = 1000
    for _ in range(trials):
        fold = rng.normal(0, 0.01, 5)  # shared by both arms: cancels in the pairing
        seed_a, seed_b = rng.normal(0, 0.012, 5), rng.normal(0, 0.012, 5)
        a = {(k, s): fold[k] + seed_a[s] + rng.normal(0, 0.006) for k in range(5) for s in range(5)}
        b = {(k, s): fold[k] + seed_b[s] + rng.normal(0, 0.006) for k in range(5) for s in range(5)}
        cmp = stats.compare_folds(a, b, ratio=0.25)
        joint += stats.verdict(cmp) == "holds"
        folds_only += cmp["corrected_t"]["p_value"] < 0.05
    assert joint / trials <= 0.07 and folds_only / trials >= 0.1, (joint, folds_only)
    shifted = {k: v + 0.05 for k, v in a.items()}
    assert stats.verdict(stats.compare_folds(shifted, b, ratio=0.25)) == "holds"
    assert stats.verdict(stats.compare_folds(a, b, 0.25, min_effect=0.5)) == "does_not_hold"


def test_the_interval_over_folds_and_seeds_holds_the_seeds_spread_too():
    """A seed's effect is the same on every fold: the splits' means all share it, so an interval
    from their spread alone would miss it (coverage far below 95%)."""
    rng = np.random.default_rng(2)
    covered = 0
    for _ in range(400):
        seed, split = rng.normal(0, 0.03, 5), rng.normal(0, 0.005, 5)
        values = {(k, s): seed[s] + split[k] + rng.normal(0, 0.006)
                  for k in range(5) for s in range(5)}  # fmt: skip
        low, high = stats.folds_interval(values, ratio=0.25)
        covered += low <= 0 <= high
    assert covered / 400 >= 0.92, covered
    assert stats.variance_components({})["error"] == "no successful run reports the metric"
    one_seed = {(k, 1): 0.5 + 0.01 * k for k in range(3)}
    with pytest.raises(ValueError, match="1 seed.s. with every split"):
        stats.compare_folds(one_seed, {(k, 1): 0.4 for k in range(3)}, 0.5)


# -- a real folds repeat -----------------------------------------------------------------------
def _folds_repeat(repo, *args, env=None, check=True):
    fast = merged(*FAST_DIGITS, "train.epochs=2")  # (20 steps a run: 12 runs in this test)
    cmd = ["xp", "repeat", "digits", *fast, "--folds", "2", "--seeds", "2", "--jobs", "2"]
    return run([*cmd, *args], repo, env=env, check=check)


def test_a_folds_repeat_crosses_folds_and_seeds_resumes_compares(repo):
    killed = _folds_repeat(repo, env={"XP_FAULT_KILL": "eval@10", "XP_FAULT_KILL_SEEDS": "2"},
                           check=False)  # fmt: skip
    parent_id = parent_id_in(killed.stdout)
    children = mlflow.MlflowClient().search_runs(
        [mlflow.get_run(parent_id).info.experiment_id], f"tags.`xp.group` = '{parent_id}'"
    )
    status = {(c.data.params["data.resplit.index"], c.data.params["seed"]): c.info.status
              for c in children}  # fmt: skip
    assert status == {("0", "1"): "FINISHED", ("1", "1"): "FINISHED",
                      ("0", "2"): "RUNNING", ("1", "2"): "RUNNING"}, status  # fmt: skip
    first_ids = {c.info.run_id for c in children}

    again = _folds_repeat(repo)  # the same command: the killed runs resume, none twice
    assert parent_id_in(again.stdout) == parent_id and "resuming" in again.stdout
    assert "fold 0 seed 2: done" in again.stdout and "fold 0 seed 1: done" not in again.stdout
    parent = mlflow.get_run(parent_id)
    children = mlflow.MlflowClient().search_runs(
        [parent.info.experiment_id], f"tags.`xp.group` = '{parent_id}'"
    )
    assert {c.info.run_id for c in children} == first_ids  # resumed in place: four runs in all
    assert {c.info.status for c in children} == {"FINISHED"}
    by_fold: dict[str, set] = {}
    for c in children:  # every run: the shared split seed and its fold's rows
        assert c.data.params["seed.split"] == "1" and c.data.tags["xp.split.kind"] == "kfold"
        by_fold.setdefault(c.data.tags["xp.split.index"], set()).add(c.data.tags["xp.split.md5"])
    assert all(len(md5s) == 1 for md5s in by_fold.values())  # both seeds: the same rows
    assert len(set().union(*by_fold.values())) == 2  # the two folds: other rows
    assert parent.data.tags["xp.split.design"] == "kfold2/seed 1"
    assert "variance over 2 splits x 2 seeds" in parent.data.tags["mlflow.note.content"]
    summary = json.loads(mlflow.artifacts.load_text(f"runs:/{parent_id}/report/summary.json"))
    assert set(summary["folds"]["variance"]["variance"]) == {"seed", "split", "residual"}
    assert summary["folds"]["ratio"] == pytest.approx(1.0)  # 2 folds: halves of the pool
    assert "variance of test/f1:" in again.stdout
    ev = evaluate(parent_id, "digits-folds", Policy(min_seeds=2))  # a promotion counts seeds
    means = {s: np.mean([c.data.metrics["test/f1"] for c in children
                         if c.data.params["seed"] == str(s)]) for s in (1, 2)}  # fmt: skip
    assert ev["n"] == 2 and ev["values"] == pytest.approx(means)
    assert ev["fold"] in (0, 1) and ev["run_id"] in first_ids and ev["tags"]["xp.fold"]
    assert {g.name: g.passed for g in ev["gates"]}["provenance"]  # (each fold: its own rows)

    # a second configuration on the same folds: paired by fold, the corrected test
    strong = _folds_repeat(repo, "optim.lr=0.003", "--baseline", parent_id)
    assert "corrected resampled t over folds, the larger p=" in strong.stdout
    assert "paired over 2 splits" in strong.stdout
    ranked = json.loads(run(["xp", "compare", "--project", "digits", "--format", "json"],
                            repo).stdout)  # fmt: skip
    assert [g["design"] for g in ranked["groups"]] == ["kfold2/seed 1"] * 2
    assert [g["n"] for g in ranked["groups"]] == [4, 4]
    assert all("data.resplit.index" not in g["params"] for g in ranked["groups"])

    # folds of another split seed (or the files' own split) against these: one line, exit 2
    proc = run(
        ["xp", "repeat", "digits", "--folds", "2", "--split-seed", "2", "--baseline", parent_id],
        repo,
        check=False,
    )  # fmt: skip  (other folds: no pairs)
    assert proc.returncode == 2 and "same split design" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("project", "args", "said"),
    [
        ("digits", {"folds": 1}, "--folds 1: give 2 or more"),
        ("digits", {"folds": 3, "resamples": 3}, "--folds and --resamples are two designs"),
        ("digits", {"resamples": 0}, "--resamples 0: give 2 or more"),
        (
            "digits",
            {"folds": 2, "overrides": ["data.resplit.kind=kfold", "data.resplit.count=2"]},
            "not data.resplit",
        ),
        (
            "digits",
            {"overrides": ["data.resplit.kind=kfold", "data.resplit.count=2"]},
            "not data.resplit",
        ),  # (a repeat of one fold would resume another fold's)
        ("digits", {"seed": 3}, "--split-seed 3: give --folds or --resamples"),
        ("digits", {"folds": 2, "overrides": ["data.poolable=false"]}, "keeps train and"),
        ("digits_loop", {"folds": 2}, "is a script project"),
    ],
)
def test_folds_asked_wrongly_are_refused_before_anything_runs(project, args, said):
    overrides = args.pop("overrides", [])
    config = load_config(project, overrides, PROJECTS)
    with pytest.raises(folds.FoldError, match=said.replace("(", r"\(")):
        folds.split_design(config, overrides, args.get("folds"), args.get("resamples"),
                           args.get("seed"))  # fmt: skip


def test_folds_the_data_cannot_hold_are_one_line_exit_2_and_record_nothing(repo):
    proc = run(["xp", "repeat", "digits", "--folds", "200"], repo, check=False)
    assert proc.returncode == 2 and "--folds 200: a class has" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not mlflow.search_runs(search_all_experiments=True, output_format="list")


def _fold_run(fold, seed, status="FINISHED", outcome="ok", f1=None):
    params = {"seed": str(seed), "data.resplit.index": str(fold)}
    return SimpleNamespace(
        info=SimpleNamespace(run_id=f"r{fold}-{seed}", status=status, start_time=0),
        data=SimpleNamespace(params=params, tags={"xp.outcome": outcome} if outcome else {},
                             metrics={"test/f1": f1} if f1 is not None else {}),
    )  # fmt: skip


def test_a_folds_repeat_keys_its_runs_by_fold_and_seed_when_it_plans_and_reproduces(tmp_path):
    from xp.repeat import plan_jobs
    from xp.reproduce import run_key, unit_values
    from xp.summary import seed_runs

    children = [_fold_run(0, 1, f1=0.8), _fold_run(1, 1, f1=0.6),
                _fold_run(0, 2, "KILLED", None), _fold_run(1, 2, f1=0.9),
                _fold_run(0, 3, f1=0.7), _fold_run(1, 3, f1=0.5)]  # fmt: skip
    runs = seed_runs(children, [1, 2, 3], folds=2)
    assert [(r.fold, r.seed, r.outcome) for r in runs] == [
        (0, 1, "ok"), (0, 2, "killed"), (0, 3, "ok"), (1, 1, "ok"), (1, 2, "ok"), (1, 3, "ok")
    ]  # fmt: skip
    plan = {"kind": "kfold", "count": 2, "seed": 7}
    (job,) = plan_jobs(runs, ["digits"], "P", 1, tmp_path, design=plan)  # only the killed one
    assert job.log.name == "fold-0-seed-2.log" and job.args[-2:] == ["--resume", "r0-2"]
    assert {"seed=2", "data.resplit.index=0", "seed.split=7"} <= set(job.args)
    assert len({run_key(c) for c in children}) == 6  # one re-run per (fold, seed)
    # a statistical reproduction of a folds repeat: each seed's mean over its folds
    assert unit_values(children, "test/f1", 2) == pytest.approx([0.7, 0.6])  # (2: a fold short)
    assert unit_values(children[:2], "test/f1", None) == pytest.approx([0.8])
