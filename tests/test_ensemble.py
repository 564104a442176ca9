"""A repeat's seeds as one model: the paired bootstrap on constructed answers, bad inputs on
constructed repeats in a store (one line, exit 2, nothing recorded), the gate, and a real digits
repeat measured, promoted as one pyfunc model and loaded back."""

from __future__ import annotations

import json
import sqlite3
import tempfile

import mlflow
import numpy as np
import pytest
from typer.testing import CliRunner

from xp import ensemble
from xp.cli.app import app
from xp.train.metrics import task_metrics

CLEAN = {"xp.git.commit": "c0ffee", "xp.git.dirty": "false", "xp.data.test.path": "t.npz",
         "xp.data.test.md5": "m1", "xp.data.test.dvc_status": "clean",
         "xp.audit.leakage": "0", "xp.audit.test_in_train": "0"}  # fmt: skip
LABELS = np.repeat(np.arange(3), 20)  # 60 test examples, 3 classes


def _probs(correct: float, seed: int) -> np.ndarray:
    """Probabilities that pick the right class for a share `correct` of LABELS."""
    rng = np.random.default_rng(seed)
    picked = np.where(rng.random(len(LABELS)) < correct, LABELS, (LABELS + 1) % 3)
    probs = np.full((len(LABELS), 3), 0.2, dtype=np.float32)
    probs[np.arange(len(LABELS)), picked] = 0.6
    return probs


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    """What the `xp` entry point sets before a verb runs (`quiet_libraries`)."""
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def _cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def _shared_store(tmp_path_factory) -> str:
    """One store for the constructed repeats: its tables take seconds to create."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('ensemble') / 'mlflow.db'}"
    mlflow.MlflowClient(tracking_uri=uri).search_experiments()
    return uri


@pytest.fixture
def store(_shared_store, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", _shared_store)
    monkeypatch.setattr(ensemble, "RESAMPLES", 100)  # (each resample: two sklearn calls)


# -- pure functions ---------------------------------------------------------------------------
def test_the_paired_bootstrap_measures_both_on_the_same_examples():
    good, poor = _probs(1.0, 0), _probs(0.6, 1)
    out = ensemble.paired_bootstrap("classification", "f1", LABELS, good, poor, resamples=100)
    f1 = task_metrics("classification", LABELS, poor.argmax(1))["f1"]
    assert out["ensemble"] == 1.0 and out["reference"] == pytest.approx(f1)
    assert out["diff"] == pytest.approx(1.0 - f1)
    low, high = out["diff_ci"]
    assert 0 < low <= out["diff"] <= high and out["ensemble_ci"] == [1.0, 1.0]
    assert out["p_value"] == pytest.approx(1 / 101)  # no resample where it is not better
    assert ensemble.paired_bootstrap("classification", "f1", LABELS, good, poor, 100) == out
    same = ensemble.paired_bootstrap("classification", "f1", LABELS, poor, poor, resamples=100)
    assert same["diff"] == 0 and same["p_value"] == 1.0  # a tie never counts as better
    # regression: lower is better, so the p-value counts resamples where the ensemble is worse
    y = np.linspace(0, 1, 50)
    close, far = y + 0.01, y + np.where(np.arange(50) % 2, 0.3, -0.3)
    reg = ensemble.paired_bootstrap("regression", "mae", y, close, far, resamples=100)
    assert reg["diff"] == pytest.approx(0.01 - 0.3) and reg["p_value"] == pytest.approx(1 / 101)


def test_the_gate_refuses_an_ensemble_that_does_not_beat_its_representative_seed():
    result = {"metric": "test/f1", "ensemble": 0.81, "representative_value": 0.80,
              "representative": 2, "diff": 0.01, "diff_ci": [-0.02, 0.04], "p_value": 0.21,
              "alpha": 0.05, "beats": False}  # fmt: skip
    gate = ensemble.beats_gate(result)
    assert gate.name == "beats_representative" and not gate.passed
    assert "p=0.21" in gate.value and "seed 2" in gate.value and "p < 0.05" in gate.threshold


def test_predictions_that_do_not_give_the_recorded_metric_are_refused():
    probs = _probs(0.7, 0)
    recorded = {f"test/{k}": v for k, v in task_metrics("classification", LABELS,
                                                        probs.argmax(1)).items()}  # fmt: skip
    ensemble.check_recorded(1, "classification", LABELS, probs, recorded)
    recorded["test/f1"] += 1e-4
    with pytest.raises(ensemble.EnsembleError, match="is not what was measured"):
        ensemble.check_recorded(1, "classification", LABELS, probs, recorded)


class _Tracker:
    """What `record_predictions` needs of a tracker: the files it would log, kept."""

    enabled = True

    def __init__(self, keep):
        self.keep = keep

    def log_artifacts(self, local_dir, artifact_path):
        import shutil

        shutil.copytree(local_dir, self.keep / artifact_path)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_a_run_records_its_test_answers_as_the_ensemble_reads_them(task, tmp_path):
    import torch

    from xp.train.evaluation import PREDICTIONS, record_predictions

    assert PREDICTIONS == ensemble.PREDICTIONS
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 3.0, 0.0]])
    labels = torch.tensor([0, 1]) if task == "classification" else torch.tensor([0.5, 0.1])
    logits = logits if task == "classification" else logits[:, :1]
    record_predictions(_Tracker(tmp_path), logits, {"labels": labels}, task, "abc")
    with np.load(tmp_path / PREDICTIONS) as z:
        assert str(z["md5"]) == "abc" and np.array_equal(z["labels"], labels.numpy())
        if task == "classification":
            assert z["probs"].dtype == np.float32
            assert np.allclose(z["probs"], torch.softmax(logits, -1).numpy())
        else:
            assert "probs" not in z.files and np.array_equal(z["pred"], [2.0, 0.0])


# -- constructed repeats in a store -------------------------------------------------------------
def _repeat(answers: dict[int, np.ndarray | None], outcomes=None, child_tags=None) -> str:
    """A repeat run whose seeds recorded `answers` (None: no predictions) and their metrics."""
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("digits")
    exp = exp.experiment_id if exp else client.create_experiment("digits")
    seeds = sorted(answers)
    parent = client.create_run(exp, tags={"xp.kind": "repeat", "xp.metric": "test/f1",
                               "xp.seeds": ",".join(map(str, seeds)), **CLEAN})  # fmt: skip
    pid = parent.info.run_id
    for seed in seeds:
        tags = {"xp.kind": "train", "xp.group": pid, **CLEAN,
                "xp.outcome": (outcomes or {}).get(seed, "ok"),
                **(child_tags or {}).get(seed, {})}  # fmt: skip
        rid = client.create_run(exp, tags=tags).info.run_id
        client.log_param(rid, "seed", str(seed))
        probs = answers[seed] if answers[seed] is not None else _probs(0.7, seed)
        for k, v in task_metrics("classification", LABELS, probs.argmax(1)).items():
            client.log_metric(rid, f"test/{k}", v)
        if answers[seed] is not None:
            with tempfile.TemporaryDirectory() as folder:
                np.savez(f"{folder}/test.npz", probs=answers[seed], labels=LABELS,
                         md5=np.array(tags["xp.data.test.md5"]))  # fmt: skip
                client.log_artifact(rid, f"{folder}/test.npz", "predictions")
        client.set_terminated(rid, "FINISHED")
    client.set_terminated(pid, "FINISHED")
    return pid


def _seed_run(group: str, seed: int) -> str:
    where = f"tags.`xp.group` = '{group}' AND params.seed = '{seed}'"
    return mlflow.search_runs(search_all_experiments=True, filter_string=where).run_id[0]


THREE = {1: _probs(0.7, 1), 2: _probs(0.7, 2), 3: _probs(0.7, 3)}


@pytest.mark.parametrize(
    "case, said",
    [
        ("failed_seed", "seed(s) 2 (failed) did not succeed"),
        ("other_test_data", "tested on different test data"),
        ("no_predictions", "recorded no test predictions"),
        ("tampered_predictions", "is not what was measured"),
        ("not_a_repeat", "not a repeat run"),
        ("loss_metric", "--metric test/loss"),
    ],
)
def test_a_bad_ensemble_is_one_line_exit_2_and_records_nothing(case, said, store):
    args = []
    if case == "failed_seed":
        run_id = _repeat(THREE, outcomes={2: "failed"})
    elif case == "other_test_data":
        run_id = _repeat(THREE, child_tags={3: {"xp.data.test.md5": "m2"}})
    elif case == "no_predictions":
        run_id = _repeat({**THREE, 2: None})
    elif case == "tampered_predictions":
        run_id = _repeat(THREE)
        seed_run = _seed_run(run_id, 2)
        mlflow.MlflowClient().log_metric(seed_run, "test/f1", 0.99)  # the later value wins
    elif case == "not_a_repeat":  # a seed's own run
        run_id = _seed_run(_repeat(THREE), 1)
    else:
        run_id, args = _repeat(THREE), ["--metric", "test/loss"]
    code, stdout, stderr = _cli("ensemble", run_id, *args)
    assert code == 2, stdout + stderr
    assert stderr.startswith("error:") and said in stderr and len(stderr.splitlines()) == 1
    tags = mlflow.get_run(run_id).data.tags
    assert not [k for k in tags if k.startswith("xp.ensemble")]
    assert not mlflow.MlflowClient().list_artifacts(run_id, "ensemble")


def test_promote_refuses_an_ensemble_no_better_than_its_representative_seed(store):
    same = _probs(0.7, 1)  # every seed answers alike: their average is each of them
    group = _repeat({1: same, 2: same.copy(), 3: same.copy()})
    code, stdout, stderr = _cli("promote", group, "--name", "m", "--min-seeds", "3", "--ensemble")
    assert code == 1, stdout + stderr
    assert "beats_representative: p=1" in stderr and "refused by 1 gate(s)" in stderr
    assert mlflow.MlflowClient().search_registered_models(filter_string="name = 'm'") == []
    assert "xp.promoted" not in mlflow.get_run(group).data.tags


def test_promote_refuses_members_whose_answers_it_cannot_average(store):
    """Seeds that err on different examples: their average beats each, but seed 1's model is
    a bare torch model (no prob_<label> columns): refused before anything is logged."""
    import torch

    def erring(seed):  # wrong (confidently) on every fifth example, a different fifth per seed
        probs = _probs(1.0, seed)
        wrong = np.arange(len(LABELS)) % 5 == seed
        probs[wrong] = np.roll(probs[wrong], 1, axis=1)
        return probs

    group = _repeat({1: erring(1), 2: erring(2), 3: erring(3)})
    with mlflow.start_run(run_id=_seed_run(group, 1)):
        mlflow.pytorch.log_model(torch.nn.Linear(2, 3), name="model", pip_requirements=["torch"],
                                 serialization_format="pickle")  # fmt: skip
    code, stdout, stderr = _cli("promote", group, "--name", "m2", "--min-seeds", "3", "--ensemble")
    assert code == 2, stdout + stderr
    assert "seed 1's model is logged as pytorch" in stderr and len(stderr.splitlines()) == 1
    assert mlflow.MlflowClient().search_registered_models(filter_string="name = 'm2'") == []


# -- a real repeat ------------------------------------------------------------------------------
def test_a_digits_repeat_as_one_model_measured_promoted_and_loaded(digits_groups, monkeypatch,
                                                                   tmp_path):  # fmt: skip
    """The weak group's three seeds (3 epochs each) differ a lot: their average beats the
    representative seed by about 0.14 of macro-F1, far outside the bootstrap's noise."""
    repo, ids = digits_groups["repo"], digits_groups["ids"]
    shared = digits_groups["env"]["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///")
    with sqlite3.connect(shared) as src, sqlite3.connect(tmp_path / "own.db") as dst:
        src.backup(dst)  # a store of our own: the other tests see no ensemble, no registration
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'own.db'}")
    monkeypatch.chdir(repo)
    monkeypatch.setattr(ensemble, "RESAMPLES", 300)
    group = ids["weak"]

    found = ensemble.read_seeds(group, None)  # what every seed of xp's trainer records
    seed_run = mlflow.get_run(found["seeds"][1]["run_id"])
    with np.load(mlflow.artifacts.download_artifacts(run_id=seed_run.info.run_id,
                                                     artifact_path="predictions/test.npz",
                                                     dst_path=str(tmp_path))) as z:  # fmt: skip
        assert z["probs"].shape == (len(z["labels"]), 5) and z["probs"].dtype == np.float32
        assert str(z["md5"]) == seed_run.data.tags["xp.data.test.md5"]
    averaged = np.mean(np.stack([found["seeds"][s]["answers"] for s in (1, 2, 3)]), axis=0)
    f1 = task_metrics("classification", found["labels"], averaged.argmax(1))["f1"]

    code, stdout, stderr = _cli("ensemble", group)
    assert code == 0, stdout + stderr
    assert "ensemble of seeds 1,2,3" in stdout and "beats its representative seed" in stdout
    tags = mlflow.get_run(group).data.tags
    assert float(tags["xp.ensemble.value"]) == pytest.approx(f1, abs=1e-6)
    assert tags["xp.ensemble.verdict"] == "beats" and tags["xp.ensemble.seeds"] == "1,2,3"
    recorded = json.loads(mlflow.artifacts.load_text(f"runs:/{group}/ensemble/ensemble.json"))
    assert recorded["diff_ci"][0] > 0 and recorded["p_value"] < 0.05
    median = sorted(recorded["values"].values())[1]
    assert recorded["representative_value"] == pytest.approx(median, abs=1e-6)

    status = mlflow.get_run(group).info
    code, stdout, stderr = _cli("promote", group, "--name", "digits-ens", "--min-seeds", "3",
                                "--ensemble")  # fmt: skip
    assert code == 0, stdout + stderr
    client = mlflow.MlflowClient()
    version = client.get_model_version_by_alias("digits-ens", "champion")
    vt = version.tags
    assert vt["xp.ensemble"] == "true" and vt["xp.group"] == group
    assert vt["xp.run_ids"].split(",") == [found["seeds"][s]["run_id"] for s in (1, 2, 3)]
    gates = {g["gate"]: g["passed"] for g in json.loads(vt["xp.gates"])}
    assert gates == {"seeds": True, "failed_seeds": True, "provenance": True,
                     "data_audit": True, "beats_current": True,
                     "beats_representative": True}  # fmt: skip
    assert float(vt["xp.ensemble.value"]) == pytest.approx(f1, abs=1e-6)
    after = mlflow.get_run(group).info  # the repeat run is as it was, only tagged
    assert (after.status, after.end_time) == (status.status, status.end_time)

    model = mlflow.pyfunc.load_model("models:/digits-ens@champion")
    with np.load(repo / "data/digits/test.npz") as z:
        answer = model.predict(z["X"].astype(np.float32))
    names = ["5", "6", "7", "8", "9"]
    assert list(answer.columns) == ["label", "score", *(f"prob_{n}" for n in names)]
    probs = answer[[f"prob_{n}" for n in names]].to_numpy()
    assert np.allclose(probs, averaged, atol=1e-6)  # the seeds' models, averaged: what was measured
    assert (answer["label"].to_numpy() == np.array(names)[averaged.argmax(1)]).all()
