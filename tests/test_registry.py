"""Promotion: gates on constructed groups; real promotions of digits repeats, loaded back."""

import json
import os
import subprocess

import mlflow
import numpy as np
import pytest

from tests.conftest import BIN, run
from xp.registry import (
    PromotionRefused,
    champion_gate,
    evaluate,
    failed_gate,
    promote,
    provenance_problems,
    representative_seed,
    seeds_gate,
)

CLEAN = {"xp.git.commit": "c0ffee", "xp.git.dirty": "false", "xp.data.test.path": "t.npz",
         "xp.data.test.md5": "m1", "xp.data.test.dvc_status": "clean",
         "xp.audit.leakage": "0", "xp.audit.test_in_train": "0"}  # fmt: skip


# -- pure gates ---------------------------------------------------------------------------------
def test_count_gates():
    assert seeds_gate(5, 5).passed and not seeds_gate(4, 5).passed
    assert seeds_gate(4, 5).value == 4 and seeds_gate(4, 5).threshold == ">= 5"
    assert failed_gate([], 0).passed and not failed_gate([3], 0).passed
    assert failed_gate([3], 1).passed and "[3]" in str(failed_gate([3], 0).value)


def test_the_data_audit_gate_refuses_training_on_test_inputs():
    from xp.registry import audit_gate

    clean = [{"seed": s, "tags": CLEAN} for s in (1, 2)]
    assert audit_gate(clean, 0.0).passed and audit_gate(clean, 0.0).value == "none"
    leaked = [clean[0], {"seed": 2, "tags": {**CLEAN, "xp.audit.leakage": "0.02",
                                            "xp.audit.test_in_train": "8"}}]  # fmt: skip
    gate = audit_gate(leaked, 0.0)
    assert not gate.passed and gate.value == "8 test inputs (2.0%) also in train"
    assert audit_gate(leaked, 0.05).passed
    old = [{"seed": 3, "tags": {k: v for k, v in CLEAN.items() if "audit" not in k}}]
    gate = audit_gate(old, 0.5)
    assert not gate.passed and gate.value == "seeds 3 not audited (recorded before xp audited data)"
    assert audit_gate(old, 1.0).passed


def test_provenance_problems_name_the_seed_and_what_is_missing():
    ok = [{"seed": s, "tags": CLEAN, "has_diff": False} for s in (1, 2)]
    assert provenance_problems(ok) == []
    cases = [
        ({"xp.git.commit": "none"}, False, "seed 1: no git commit recorded"),
        ({"xp.git.dirty": "true"}, False, "seed 1: dirty tree without its recorded diff"),
        (
            {"xp.data.test.dvc_status": "modified"},
            False,
            "seed 1: data test was modified against DVC",
        ),
        ({"xp.data.test.md5": ""}, False, "seed 1: no md5 recorded for data test"),
    ]
    for change, has_diff, problem in cases:
        runs = [{"seed": 1, "tags": {**CLEAN, **change}, "has_diff": has_diff}, ok[1]]
        assert problem in provenance_problems(runs)
    dirty_with_diff = [{"seed": 1, "tags": {**CLEAN, "xp.git.dirty": "true"}, "has_diff": True}]
    assert provenance_problems(dirty_with_diff) == []
    mixed = [ok[0], {"seed": 2, "tags": {**CLEAN, "xp.git.commit": "beef"}, "has_diff": False}]
    assert provenance_problems(mixed) == ["seeds differ in xp.git.commit"]


def test_champion_gate_is_a_one_sided_welch_test_on_the_same_test_data():
    from scipy import stats as sps

    holder = {"version": "1", "group": "g1", "values": [0.70, 0.72, 0.71], "test_md5": "m1"}
    better = [0.80, 0.82, 0.79]
    gate, p = champion_gate(better, holder, "test/f1", 0.05, "m1", "g2")
    want = sps.ttest_ind(better, holder["values"], equal_var=False, alternative="greater").pvalue
    assert gate.passed and p == pytest.approx(want)
    gate, p = champion_gate([0.71, 0.70, 0.72], holder, "test/f1", 0.05, "m1", "g2")
    assert not gate.passed and p > 0.05
    lower = champion_gate([0.6, 0.62, 0.61], holder, "test/rmse", 0.05, "m1", "g2")[0]
    assert lower.passed  # rmse: lower is better
    other_data = champion_gate(better, holder, "test/f1", 0.05, "m2", "g2")[0]
    assert not other_data.passed and "other test data" in other_data.value
    assert not champion_gate(better, holder, "test/f1", 0.05, "m1", "g1")[0].passed
    assert champion_gate(better, None, "test/f1", 0.05, "m1", "g2")[0].passed


def test_the_representative_seed_is_the_one_closest_to_the_median():
    assert representative_seed({1: 0.7, 2: 0.9, 3: 0.8, 4: 0.85, 5: 0.6}) == 3
    assert representative_seed({1: 0.7, 2: 0.9}) == 1  # equally close: the smaller seed
    assert representative_seed({4: 0.5}) == 4


# -- constructed groups in a store --------------------------------------------------------------
def _group(values, outcomes=None, child_tags=None, parent_tags=None) -> str:
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("digits")
    exp = exp.experiment_id if exp else client.create_experiment("digits")
    seeds = list(range(1, len(values) + 1))
    parent = client.create_run(exp, tags={"xp.kind": "repeat", "xp.metric": "test/f1",
                               "xp.seeds": ",".join(map(str, seeds)), **CLEAN,
                               **(parent_tags or {})})  # fmt: skip
    pid = parent.info.run_id
    for seed, value in zip(seeds, values):
        outcome = (outcomes or {}).get(seed, "ok")
        child = client.create_run(exp, tags={"xp.kind": "train", "xp.group": pid, **CLEAN,
                                  "xp.outcome": outcome, **(child_tags or {})})  # fmt: skip
        client.log_param(child.info.run_id, "seed", str(seed))
        client.log_metric(child.info.run_id, "test/f1", value)
        client.set_terminated(child.info.run_id, "FINISHED")
    client.set_terminated(pid, "FINISHED")
    return pid


def _holder(name: str, group: str, test_md5: str = "m1") -> None:
    client = mlflow.MlflowClient()
    client.create_registered_model(name)
    tags = {"xp.group": group, "xp.data.test.md5": test_md5, "xp.metric": "test/f1"}
    v = client.create_model_version(name, os.getcwd(), tags=tags)
    client.set_registered_model_alias(name, "champion", v.version)


FIVE = [0.80, 0.82, 0.79, 0.81, 0.83]


@pytest.mark.parametrize(
    "case, gate",
    [
        ("few_seeds", "seeds"),
        ("failed_seed", "failed_seeds"),
        ("no_commit", "provenance"),
        ("dirty_without_diff", "provenance"),
        ("modified_data", "provenance"),
        ("leaked_test_data", "data_audit"),
        ("not_better", "beats_current"),
        ("other_test_data", "beats_current"),
    ],
)
def test_each_gate_refuses_and_leaves_the_registry_untouched(case, gate):
    kwargs = {
        "few_seeds": {"values": FIVE[:3]},
        "failed_seed": {"values": [*FIVE, 0.8], "outcomes": {2: "failed"}},
        "no_commit": {"values": FIVE, "child_tags": {"xp.git.commit": "none"}},
        "dirty_without_diff": {"values": FIVE, "child_tags": {"xp.git.dirty": "true"}},
        "modified_data": {"values": FIVE, "child_tags": {"xp.data.test.dvc_status": "modified"}},
        "leaked_test_data": {"values": FIVE, "child_tags": {"xp.audit.leakage": "0.01"}},
    }.get(case, {"values": FIVE})
    if case in ("not_better", "other_test_data"):
        _holder("m", _group([0.81, 0.82, 0.80, 0.83, 0.79]),
                test_md5="m1" if case == "not_better" else "m9")  # fmt: skip
    candidate = _group(**kwargs)
    client = mlflow.MlflowClient()
    before = [v.version for v in client.search_model_versions("name = 'm'")]
    with pytest.raises(PromotionRefused) as refused:
        promote(candidate, "m")
    failed = [g.name for g in refused.value.gates if not g.passed]
    assert failed == [gate]
    assert f"{gate}:" in str(refused.value) and "needs" in str(refused.value)
    assert [v.version for v in client.search_model_versions("name = 'm'")] == before
    assert "xp.promoted" not in mlflow.get_run(candidate).data.tags


def test_a_single_training_run_is_not_evidence():
    client = mlflow.MlflowClient()
    r = client.create_run(client.create_experiment("x"), tags={"xp.kind": "train"})
    with pytest.raises(Exception, match="not a repeat run"):
        evaluate(r.info.run_id, "m")


# -- real promotions ----------------------------------------------------------------------------
def test_promotions_gate_register_move_the_alias_and_load(digits_groups, monkeypatch):
    repo, env, ids = digits_groups["repo"], digits_groups["env"], digits_groups["ids"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    client = mlflow.MlflowClient()
    xp = ["xp", "promote"]

    dry = run([*xp, ids["weak"], "--name", "digits-cnn", "--min-seeds", "3", "--dry-run"], repo)
    assert "would pass" in dry.stdout and "provenance" in dry.stdout
    assert client.search_registered_models() == []

    run([*xp, ids["weak"], "--name", "digits-cnn", "--min-seeds", "3"], repo)
    first = client.get_model_version_by_alias("digits-cnn", "champion")
    tags = first.tags
    weak = mlflow.get_run(ids["weak"])
    assert tags["xp.group"] == ids["weak"] and tags["xp.metric"] == "test/f1"
    assert float(tags["xp.mean"]) == pytest.approx(weak.data.metrics["test/f1/mean"], rel=1e-5)
    assert float(tags["xp.ci95_low"]) == pytest.approx(weak.data.metrics["test/f1/ci95_low"],
                                                       rel=1e-5)  # fmt: skip
    assert tags["xp.n"] == "3" and tags["xp.p_value"] == "none"
    assert tags["xp.git.commit"] == weak.data.tags["xp.git.commit"]
    for split in ("train", "validation", "test", "backbone"):
        assert tags[f"xp.data.{split}.md5"] == weak.data.tags[f"xp.data.{split}.md5"]
    gates = {g["gate"]: g for g in json.loads(tags["xp.gates"])}
    assert set(gates) == {"seeds", "failed_seeds", "provenance", "data_audit", "beats_current"}
    assert all(g["passed"] for g in gates.values()) and gates["seeds"]["value"] == 3
    seed_run = mlflow.get_run(tags["xp.run_id"])  # the seed closest to the median
    values = json.loads(tags["xp.values"])
    assert seed_run.data.metrics["test/f1"] == sorted(values)[1]
    assert seed_run.data.tags["xp.group"] == ids["weak"]

    # a second promotion must beat the first: the full fine-tune does
    proc = run([*xp, ids["strong"], "--name", "digits-cnn", "--min-seeds", "3"], repo)
    assert "version 1 is now @previous" in proc.stdout
    second = client.get_model_version_by_alias("digits-cnn", "champion")
    assert str(second.version) == "2" and float(second.tags["xp.p_value"]) < 0.05
    assert str(client.get_model_version_by_alias("digits-cnn", "previous").version) == "1"

    # the champion answers raw 8x8 images with labels and probabilities, not logits
    model = mlflow.pyfunc.load_model("models:/digits-cnn@champion")
    with np.load(repo / "data/digits/test.npz") as z:
        answer = model.predict(z["X"].astype(np.float32))
        labels = z["y"]
    names = ["5", "6", "7", "8", "9"]
    assert list(answer.columns) == ["label", "score", *(f"prob_{n}" for n in names)]
    probs = answer[[f"prob_{n}" for n in names]].to_numpy()
    assert np.allclose(probs.sum(1), 1, atol=1e-5) and (answer["score"] == probs.max(1)).all()
    accuracy = (answer["label"].to_numpy() == np.array(names)[labels]).mean()
    from fastapi.testclient import TestClient
    from mlflow.pyfunc import scoring_server

    served = TestClient(scoring_server.init(model))  # the app `mlflow models serve` runs
    with np.load(repo / "data/digits/test.npz") as z:
        reply = served.post("/invocations", json={"inputs": z["X"][:3].tolist()})
    assert reply.status_code == 200, reply.text
    rows = reply.json()["predictions"]
    assert [r["label"] for r in rows] == answer["label"][:3].tolist()
    assert rows[0]["score"] == pytest.approx(answer["score"][0]) and "prob_9" in rows[0]
    run_acc = mlflow.get_run(second.tags["xp.run_id"]).data.metrics["test/accuracy"]
    assert accuracy == pytest.approx(run_acc)  # the registered weights are the seed's best

    # and the probe cannot take it back: refused, nothing changes
    proc = run([*xp, ids["weak"], "--name", "digits-cnn", "--min-seeds", "3"], repo, check=False)
    assert proc.returncode == 1 and "beats_current" in proc.stderr, proc.stderr
    assert len(client.search_model_versions("name = 'digits-cnn'")) == 2
    assert str(client.get_model_version_by_alias("digits-cnn", "champion").version) == "2"

    # the default --min-seeds 5 refuses a 3-seed group, through the mlflow entry point too
    cmd = ["mlflow", "run", ".", "-e", "promote", "--env-manager", "local", "-P",
           f"run_id={ids['strong']}", "-P", "name=other", "-P", "dry_run=true"]  # fmt: skip
    proc = run(cmd, repo, env=env, check=False)
    assert proc.returncode != 0 and "would be refused" in proc.stdout
    assert client.search_registered_models(filter_string="name = 'other'") == []


def test_a_repeat_reproduces_seed_by_seed(digits_groups, monkeypatch):
    repo, env, ids = digits_groups["repo"], digits_groups["env"], digits_groups["ids"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    proc = subprocess.run(
        [str(BIN / "xp"), "reproduce", ids["weak"], "--jobs", "2"], cwd=repo,
        env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "verdict: identical" in proc.stdout
    new = mlflow.search_runs(
        [mlflow.get_run(ids["weak"]).info.experiment_id],
        f"tags.`xp.reproduces` = '{ids['weak']}'", output_format="list",
    )  # fmt: skip
    (parent,) = new
    assert parent.data.tags["xp.kind"] == "repeat"
    assert parent.data.tags["xp.reproduce.verdict"] == "identical"
    assert parent.data.metrics["test/f1/mean"] == mlflow.get_run(ids["weak"]).data.metrics[
        "test/f1/mean"]  # fmt: skip
    from xp.record.track import children_of

    assert len(children_of(parent.info.run_id)) == 3
    assert "seed 3: test/f1" in proc.stdout
