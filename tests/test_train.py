"""The trainer, in-process on the digits project and a tiny BERT."""

import io
import os
import re
import signal
import zipfile
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import FAST_DIGITS, merged
from xp.config import load_config
from xp.train.loop import train
from xp.train.models import new_cnn
from xp.train.recipe import lowest_trainable, param_groups, total_steps


def cfg(repo: Path, *overrides: str, project: str = "digits"):
    return load_config(project, merged(*FAST_DIGITS, *overrides), repo / "projects")


def test_param_groups_skip_decay_on_biases_and_scale_lr_by_depth(repo):
    config = cfg(repo, "optim.layer_decay=0.5", "optim.weight_decay=0.1")
    groups = param_groups(new_cnn(5), config)
    for g in groups:
        assert all((p.ndim > 1) == (g["weight_decay"] == 0.1) for p in g["params"])
    lr = {g["group"]: g["lr"] for g in groups}
    assert lr["head"] == pytest.approx(1e-3)
    assert lr["layer.2"] == pytest.approx(5e-4)
    assert lr["embeddings"] == pytest.approx(1e-3 * 0.5**4)


def test_total_steps_counts_optimizer_steps(repo):
    assert total_steps(cfg(repo, "train.batch_size=32"), 300) == (10, 30)
    assert total_steps(cfg(repo, "train.batch_size=32", "train.grad_accum=3"), 300) == (4, 12)
    assert total_steps(cfg(repo, "train.max_steps=7"), 300) == (10, 7)


def test_freezing_and_gradual_unfreezing_schedule(repo):
    groups = 5  # embeddings, 3 layers, head
    assert lowest_trainable(cfg(repo), groups, 0) == 0
    assert lowest_trainable(cfg(repo, "train.freeze_embeddings=true"), groups, 0) == 1
    assert lowest_trainable(cfg(repo, "train.freeze_layers=2"), groups, 99) == 3
    gradual = cfg(repo, "train.unfreeze_every=4")
    assert [lowest_trainable(gradual, groups, s) for s in (0, 3, 4, 8, 12, 16, 40)] == [
        4, 4, 3, 2, 1, 0, 0,
    ]  # fmt: skip
    both = cfg(repo, "train.unfreeze_every=4", "train.freeze_layers=1")
    assert lowest_trainable(both, groups, 40) == 2


def test_untracked_digits_run_learns(repo):
    result = train(cfg(repo), repo, track=False)
    assert result.outcome == "ok" and result.steps == 30
    assert result.test["f1"] > result.baseline["f1"] + 0.3


def test_frozen_layers_keep_their_pretrained_weights(repo):
    result = train(cfg(repo, "train.freeze_layers=2"), repo, track=False)
    pre = load_file(repo / "models/digits_pretrained/model.safetensors")
    last = load_file(repo / ".xp/runs" / result.run_id / "checkpoints/last/model.safetensors")
    for name in ("stem.0.weight", "layers.0.0.weight", "layers.1.0.bias"):
        assert torch.equal(pre[name], last[name]), name
    assert not torch.equal(pre["layers.2.0.weight"], last["layers.2.0.weight"])


def _save_npz(path: Path, X: np.ndarray, y: np.ndarray) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, arr in (("X", X), ("y", y)):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, arr)
            zf.writestr(f"{name}.npy", buf.getvalue())


def test_nan_loss_fails_the_run_and_says_where(repo):
    with np.load(repo / "data/digits/train.npz") as z:
        X, y = z["X"].copy(), z["y"]
    X[:] = np.nan  # corrupt data: the first step's loss is NaN
    _save_npz(repo / "data/digits/train_nan.npz", X, y)
    result = train(cfg(repo, "data.train=data/digits/train_nan.npz"), repo)
    assert (result.outcome, result.status) == ("failed", "FAILED")
    assert result.message == "loss became nan at step 1"
    run = mlflow.get_run(result.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["xp.outcome"] == "failed"
    assert run.data.tags["xp.data.train.dvc_status"] == "untracked"


def test_early_stopping_keeps_the_best_checkpoint(repo):
    config = cfg(repo, "train.epochs=5", "eval.every=10", "eval.patience=2", "eval.min_delta=10")
    result = train(config, repo)
    assert result.outcome == "early_stopped" and result.steps == 30  # best at 10, 2 misses
    run = mlflow.get_run(result.run_id)
    assert run.data.tags["xp.outcome"] == "early_stopped"
    assert run.data.tags["xp.best_step"] == "10"
    assert run.data.metrics["best/val/f1"] == pytest.approx(
        mlflow.MlflowClient().get_metric_history(result.run_id, "val/f1")[0].value
    )


def test_a_run_no_better_than_the_trivial_baseline_fails(repo):
    with np.load(repo / "data/digits/test.npz") as z:
        X, y = z["X"], z["y"]
    keep = y == 0  # a test set of one class: predicting the majority class is perfect
    _save_npz(repo / "data/digits/test_one.npz", X[keep], y[keep])
    with np.load(repo / "data/digits/train.npz") as z:
        Xt, yt = z["X"], z["y"].copy()
    yt[: len(yt) * 3 // 4] = 0  # class 0 is the training majority
    _save_npz(repo / "data/digits/train_skew.npz", Xt, yt)
    config = cfg(
        repo, "data.test=data/digits/test_one.npz", "data.train=data/digits/train_skew.npz"
    )
    result = train(config, repo)
    assert result.outcome == "failed"
    assert "no better than the trivial baseline" in result.message
    assert mlflow.get_run(result.run_id).data.tags["xp.outcome"] == "failed"


def _kill_at(step: int):
    def events(kind, info):
        if kind == "step" and info["step"] == step:
            os.kill(os.getpid(), signal.SIGTERM)  # a real signal, handled by the trainer

    return events


def test_killed_run_resumes_to_exactly_the_uninterrupted_result(repo):
    config = cfg(repo, "train.epochs=4", "eval.every=3")
    whole = train(config, repo)
    killed = train(config, repo, events=_kill_at(14))
    assert (killed.status, killed.signal, killed.steps) == ("KILLED", "SIGTERM", 14)
    assert mlflow.get_run(killed.run_id).info.status == "KILLED"
    resumed = train(config, repo, resume=killed.run_id)
    assert resumed.run_id == killed.run_id and resumed.steps == whole.steps == 40
    assert resumed.test == whole.test  # digit for digit, not approx
    assert resumed.best_val == whole.best_val
    client = mlflow.MlflowClient()
    for key in ("train/loss", "train/grad_norm", "val/f1", "val/loss"):
        a = [(m.step, m.value) for m in client.get_metric_history(whole.run_id, key)]
        b = [(m.step, m.value) for m in client.get_metric_history(killed.run_id, key)]
        assert sorted(a) == sorted(b), key
    assert mlflow.get_run(killed.run_id).data.tags["xp.resumed_at_step"] == "14"


def test_resume_from_artifacts_when_the_local_scratch_is_gone(repo):
    import shutil

    config = cfg(repo, "eval.every=3")
    whole = train(config, repo)
    killed = train(config, repo, events=_kill_at(8))
    shutil.rmtree(repo / ".xp" / "runs" / killed.run_id)  # e.g. resumed on another machine
    resumed = train(config, repo, resume=killed.run_id)
    assert resumed.test == whole.test


def test_resume_refuses_other_code_or_data(repo):
    from tests.conftest import git
    from xp import XpError

    config = cfg(repo, "eval.every=3")
    killed = train(config, repo, events=_kill_at(4))
    (repo / "NOTES.md").write_text("a new commit\n")
    git(repo, "add", "NOTES.md")
    git(repo, "commit", "-qm", "change")
    with pytest.raises(XpError, match=f"cannot resume run {killed.run_id}: xp.git.commit was "):
        train(config, repo, resume=killed.run_id)
    assert mlflow.get_run(killed.run_id).info.status == "KILLED"  # left as it was


def _tiny_bert_config(repo, tiny_bert, project: str, rows: int, every: int):
    overrides = [
        f"model.name={tiny_bert}", f"data.train_limit={rows}", "train.epochs=1",
        f"eval.every={every}", "optim.lr=0.001", "train.checkpoint_every=null",
    ]  # fmt: skip
    return load_config(project, overrides, repo / "projects")


def test_text_classification_on_tiny_bert_logs_a_model_that_reads_text(repo, tiny_bert):
    result = train(_tiny_bert_config(repo, tiny_bert, "vader", 256, 4), repo)
    assert result.status in ("FINISHED", "FAILED") and result.steps == 8
    assert set(result.test) == {"loss", "accuracy", "precision", "recall", "f1"}
    run = mlflow.get_run(result.run_id)
    assert run.data.tags["xp.model.source"].startswith("path:")
    model = mlflow.pyfunc.load_model(f"runs:/{result.run_id}/model")
    preds = model.predict(["wonderful", "horrible"])
    assert set(preds["label"]) <= {"negative", "neutral", "positive"}


def test_regression_on_tiny_bert_reports_mae_and_rmse(repo, tiny_bert):
    result = train(_tiny_bert_config(repo, tiny_bert, "vader_valence", 128, 2), repo, track=False)
    assert set(result.test) == {"loss", "mae", "rmse"}
    assert result.test["rmse"] >= result.test["mae"] > 0


def test_gradient_accumulation_matches_the_large_batch(repo):
    def first_step_weights(*overrides):
        config = cfg(repo, "train.max_steps=1", "model.dropout=0", "schedule.warmup=0",
                     "train.clip_norm=null", "train.deterministic=false", *overrides)  # fmt: skip
        result = train(config, repo, track=False)
        return load_file(repo / ".xp/runs" / result.run_id / "checkpoints/last/model.safetensors")

    big = first_step_weights("train.batch_size=32")
    accumulated = first_step_weights("train.batch_size=16", "train.grad_accum=2")
    small = first_step_weights("train.batch_size=16")
    for name, w in big.items():
        assert torch.allclose(w, accumulated[name], atol=1e-6), name
    assert any(not torch.allclose(w, small[n], atol=1e-6) for n, w in big.items())


# -- optimizers and penalties (issue 23) ----------------------------------------------------------
def test_each_optimizer_takes_its_own_settings_and_keeps_llrd_and_decay(repo):
    from xp.train.recipe import build_optimizer

    model = new_cnn(5)
    cases = {
        "adamw": (torch.optim.AdamW, [], {"betas": (0.9, 0.999)}),
        "adam": (torch.optim.Adam, ["optim.betas=[0.8,0.99]"], {"betas": (0.8, 0.99)}),
        "sgd": (torch.optim.SGD, ["optim.momentum=0.9", "optim.nesterov=true"],
                {"momentum": 0.9, "nesterov": True}),
        "rmsprop": (torch.optim.RMSprop, ["optim.alpha=0.9"], {"alpha": 0.9, "momentum": 0.0}),
    }  # fmt: skip
    for name, (cls, extra, settings) in cases.items():
        config = cfg(repo, f"optim.name={name}", "optim.layer_decay=0.5", *extra)
        opt = build_optimizer(param_groups(model, config), config)
        assert type(opt) is cls
        assert {k: opt.defaults[k] for k in settings} == settings
        lrs = {g["group"]: g["lr"] for g in opt.param_groups}
        assert lrs["head"] == pytest.approx(1e-3) and lrs["layer.2"] == pytest.approx(5e-4)
        assert {g["weight_decay"] for g in opt.param_groups} == {0.01, 0.0}


def test_a_setting_of_another_optimizer_is_one_line_and_defaults_keep_the_hash(repo):
    from xp.config import ConfigError, config_hash

    for bad, says in (("optim.momentum=0.9", "optim.momentum is not a setting of optim.name=adamw"),
                      ("optim.nesterov=true", "optim.nesterov is not a setting"),
                      ("optim.name=lamb", "optim.name='lamb'")):  # fmt: skip
        with pytest.raises(ConfigError, match=re.escape(says)):
            cfg(repo, bad)
    with pytest.raises(ConfigError, match="needs optim.momentum > 0"):
        cfg(repo, "optim.name=sgd", "optim.nesterov=true")
    assert config_hash(cfg(repo, "optim.name=adamw", "optim.l1=0")) == config_hash(cfg(repo))
    assert config_hash(cfg(repo, "optim.name=sgd")) != config_hash(cfg(repo))


def test_l1_is_logged_apart_from_the_loss_and_shrinks_the_decayed_weights(repo):
    plain = train(cfg(repo), repo)
    sparse = train(cfg(repo, "optim.l1=0.01"), repo)
    client = mlflow.MlflowClient()
    l1 = [m.value for m in client.get_metric_history(sparse.run_id, "train/l1")]
    assert len(l1) == sparse.steps and all(v > 0 for v in l1) and l1[-1] < l1[0]
    assert client.get_metric_history(plain.run_id, "train/l1") == []

    def weight(run_id):
        last = load_file(repo / ".xp/runs" / run_id / "checkpoints/last/model.safetensors")
        return sum(v.abs().sum().item() for k, v in last.items() if v.ndim > 1)

    assert weight(sparse.run_id) < 0.95 * weight(plain.run_id)
