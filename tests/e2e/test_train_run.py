"""End to end: `mlflow run . -e train` and `xp train` in a fresh git + DVC repo, checked against
the whole run record of shared/RUN_SCHEMA.md."""

import json

import mlflow
import pytest
import yaml

from tests.conftest import FAST_DIGITS, git, run

pytestmark = pytest.mark.e2e

SPLITS = ("train", "validation", "test")


def _runs(experiment: str | None = None):
    client = mlflow.MlflowClient()
    exps = [e.experiment_id for e in client.search_experiments()]
    return mlflow.search_runs(exps, output_format="list") if exps else []


def _mlflow_run(repo, *params: str, check=True):
    cmd = ["mlflow", "run", ".", "-e", "train", "--env-manager", "local"]
    for p in params:
        cmd += ["-P", p]
    return run(cmd, repo, check=check)


def _dvc_lock_md5s(repo) -> dict[str, str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for s in lock["stages"].values() for o in s.get("outs", [])}


def test_mlflow_run_records_the_whole_training_run(repo):
    overrides = [o.replace("=null", "=null") for o in FAST_DIGITS]
    _mlflow_run(repo, "project=digits", "seed=3", *overrides)
    (r,) = _runs()
    tags, params, metrics = r.data.tags, r.data.params, r.data.metrics
    assert r.info.status == "FINISHED"

    # params: the resolved config flattened, and every seed
    for key in ("project", "seed", "seed.init", "seed.data_order", "seed.dropout", "optim.lr",
                "train.batch_size", "model.name", "schedule.warmup", "eval.metric"):  # fmt: skip
        assert key in params, key
    assert params["seed"] == "3" and params["train.epochs"] == "3"

    # tags
    commit = git(repo, "rev-parse", "HEAD")
    assert tags["xp.kind"] == "train" and tags["xp.project"] == "digits"
    assert len(tags["xp.config_hash"]) == 16
    assert tags["xp.git.commit"] == commit == tags["mlflow.source.git.commit"]
    assert tags["xp.git.branch"] == "main" and tags["xp.git.dirty"] == "false"
    assert tags["xp.outcome"] == "ok"
    assert tags["xp.command"].startswith("xp train digits seed=3 train.epochs=3")
    for key in ("python", "torch", "transformers", "mlflow"):
        assert tags[f"xp.env.{key}"], key
    assert tags["xp.env.device"] == "cpu" and tags["xp.env.deterministic"] == "true"
    import torch

    from xp.record.numerics import cpu_model

    assert tags["xp.env.cpu"] == cpu_model()  # the hardware and kernels that made the numbers
    assert tags["xp.env.cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert tags["xp.env.numerics"] == "native"
    assert tags["xp.env.threads"] == "1"  # the digits config pins one thread
    import os

    from xp.record.numerics import NUMERICS_ENV, env_summary

    expected = {k: os.environ[k] for k in NUMERICS_ENV if k in os.environ}
    expected.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # set by deterministic mode
    assert tags["xp.env.numerics_env"] == env_summary(expected)
    assert "xp.env.gpu" not in tags and "xp.env.cudnn" not in tags  # no GPU here

    # data: every file read, with the md5 DVC recorded in dvc.lock, and clean
    lock = _dvc_lock_md5s(repo)
    for name in SPLITS:
        path = tags[f"xp.data.{name}.path"]
        assert tags[f"xp.data.{name}.md5"] == lock[path], name
        assert tags[f"xp.data.{name}.dvc_status"] == "clean"
    assert tags["xp.data.backbone.path"] == "models/digits_pretrained"
    assert tags["xp.data.backbone.md5"] == lock["models/digits_pretrained"]
    inputs = {i.dataset.name: i for i in r.inputs.dataset_inputs}
    for name in SPLITS:
        assert inputs[name].dataset.digest == tags[f"xp.data.{name}.md5"]
        assert {t.key: t.value for t in inputs[name].tags}["mlflow.data.context"] == name

    # metrics by step, at evaluations, at the end
    client = mlflow.MlflowClient()
    for key in ("train/loss", "train/lr", "train/grad_norm"):
        assert [m.step for m in client.get_metric_history(r.info.run_id, key)] == list(range(1, 31))
    assert [m.step for m in client.get_metric_history(r.info.run_id, "val/f1")] == list(
        range(5, 31, 5)
    )
    for m in ("loss", "accuracy", "precision", "recall", "f1"):
        assert f"test/{m}" in metrics and f"best/val/{m}" in metrics

    # artifacts
    arts = {a.path for a in client.list_artifacts(r.info.run_id)}
    assert {"config.yaml", "provenance", "checkpoints"} <= arts
    prov = {a.path for a in client.list_artifacts(r.info.run_id, "provenance")}
    assert prov == {"provenance/requirements.txt", "provenance/environment.json"}  # clean: no diff
    for which in ("best", "last"):
        files = {a.path.rsplit("/", 1)[-1]
                 for a in client.list_artifacts(r.info.run_id, f"checkpoints/{which}")}  # fmt: skip
        assert files == {"model.safetensors", "trainer_state.pt"}
    env = json.loads(
        mlflow.artifacts.load_text(f"runs:/{r.info.run_id}/provenance/environment.json")
    )
    assert env["cpu"] == tags["xp.env.cpu"] and "PyTorch built with" in env["torch_config"]
    assert env["env"].get("CUBLAS_WORKSPACE_CONFIG") == ":4096:8"  # set by deterministic mode
    recorded = yaml.safe_load(mlflow.artifacts.load_text(f"runs:/{r.info.run_id}/config.yaml"))
    assert recorded["seed"]["master"] == 3 and recorded["train"]["epochs"] == 3

    # the logged model predicts on raw pixels
    import numpy as np

    model = mlflow.pyfunc.load_model(f"runs:/{r.info.run_id}/model")
    with np.load(repo / "data/digits/test.npz") as z:
        pred = model.predict(z["X"][:4].astype(np.float32))  # raw 8x8 images
    assert pred.shape == (4, 7) and set(pred["label"]) <= {"5", "6", "7", "8", "9"}


def test_a_modified_data_file_is_recorded_as_modified(repo):
    import numpy as np

    path = repo / "data/digits/validation.npz"
    with np.load(path) as z:
        X, y = z["X"], z["y"]
    np.savez(path, X=X[:-1], y=y[:-1])  # someone edited the data without `dvc commit`
    run(["xp", "train", "digits", *FAST_DIGITS], repo)
    (r,) = _runs()
    tags = r.data.tags
    assert tags["xp.data.validation.dvc_status"] == "modified"
    assert tags["xp.data.validation.md5"] != _dvc_lock_md5s(repo)["data/digits/validation.npz"]
    assert tags["xp.data.train.dvc_status"] == "clean"


def test_text_project_through_mlflow_run_with_overrides(repo, tiny_bert):
    # a random tiny BERT after 2 steps may or may not beat the majority class: either way the
    # run must be recorded in full (a run that does not beat it exits 1, as it should)
    _mlflow_run(repo, "project=vader", "seed=2", f"model.name={tiny_bert}",
                "data.train_limit=64", "train.epochs=1", "eval.every=2", check=False)  # fmt: skip
    (r,) = _runs()
    assert r.data.tags["xp.outcome"] in ("ok", "failed")
    assert r.data.params["data.train_limit"] == "64"
    assert r.data.tags["xp.data.train.path"] == "data/vader/train.csv"
    assert r.data.tags["xp.data.train.dvc_status"] == "clean"
    assert "test/f1" in r.data.metrics


def test_a_script_project_through_mlflow_run_is_one_run(repo):
    """`mlflow run -e train` of a script project: xp joins the run MLflow opened and hands that
    same run to the script (projects/digits_loop), a param passed through as an override."""
    _mlflow_run(repo, "project=digits_loop", "seed=2", "epochs=2")
    (r,) = _runs()
    assert r.info.status == "FINISHED" and r.data.tags["xp.outcome"] == "ok"
    assert r.data.tags["mlflow.project.entryPoint"] == "train"
    assert r.data.params["params.epochs"] == "2" and r.data.params["seed"] == "2"
    assert "projects/digits_loop/train.py" in r.data.tags["xp.script.argv"]
    assert {"test/f1", "train/loss"} <= set(r.data.metrics)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["digits", "optim.lr=-1"], "error: optim.lr=-1: Input should be greater than 0"),
        (["digits", "train.bach_size=8"], "error: unknown config key 'train.bach_size'"),
        (
            ["digts"],
            "error: unknown project 'digts'; known projects: digits, digits_lightning, "
            "digits_loop, vader, vader_lora, vader_trainer, vader_valence",
        ),
        (["digits", "--resume", "0123abc"], "error: unknown run id '0123abc'"),
    ],
)
def test_user_errors_are_one_line_and_create_no_run(repo, args, message):
    proc = run(["xp", "train", *args], repo, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(message), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert _runs() == []


def test_missing_data_names_the_file_and_how_to_make_it(repo):
    (repo / "data/digits/test.npz").unlink()
    proc = run(["xp", "train", "digits"], repo, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "error: data file 'data/digits/test.npz' (test) is missing: run `dvc repro digits_data` "
        "to build it, or `dvc pull` to fetch it"
    )
    assert _runs() == []
