"""Why a run is good or bad: the overfitting diagnosis and the training monitor."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest

from tests.conftest import FAST_DIGITS, merged, run
from xp import XpError
from xp.config import ConfigError, MonitorConfig, config_hash, load_config
from xp.diagnose import diagnosis, overfitting
from xp.diagnose.monitor import Monitor
from xp.train.loop import train


def cfg(repo, *overrides: str):
    return load_config("digits", merged(*FAST_DIGITS, *overrides), repo / "projects")


def _evals(val_losses, train_losses=None, vals=None):
    out = []
    for i, v in enumerate(val_losses):
        e = {"step": 10 * (i + 1), "val_loss": v, "val": vals[i] if vals else 1 - v}
        if train_losses is not None:
            e.update(train_loss=train_losses[i], train=1 - train_losses[i])
        out.append(e)
    return out


# -- overfitting --------------------------------------------------------------------------------
def test_validation_loss_turning_up_while_training_loss_falls_is_overfitting():
    falling = [1.0, 0.8, 0.6, 0.4, 0.3, 0.2]
    healthy = overfitting.diagnose(_evals([1.0, 0.8, 0.7, 0.65, 0.6, 0.59], falling), "f1",
                                   True, 60, 60)  # fmt: skip
    assert healthy["verdict"] == "none" and "onset_step" not in healthy
    mild = overfitting.diagnose(_evals([1.0, 0.8, 0.7, 0.72, 0.74, 0.76], falling), "f1",
                                True, 30, 60)  # fmt: skip
    assert (mild["verdict"], mild["text"], mild["onset_step"]) == ("onset", "onset at step 30", 30)
    assert mild["val_loss_rise"] == pytest.approx(0.76 / 0.7 - 1)
    assert mild["steps_after_best"] == 30 and mild["evals_after_best"] == 3
    assert mild["gap_at_best"] == pytest.approx((1 - 0.6) - (1 - 0.7))  # train - val, at step 30
    severe = overfitting.diagnose(_evals([1.0, 0.5, 0.6, 0.7, 0.8, 0.9], falling), "f1",
                                  True, 20, 60)  # fmt: skip
    assert (severe["verdict"], severe["onset_step"]) == ("severe", 20)
    # the validation loss rose, but so did the training loss: not overfitting (it is instability)
    both = overfitting.diagnose(_evals([1.0, 0.5, 0.9], [1.0, 0.5, 0.9]), "f1", True, 20, 30)
    assert both["verdict"] == "none"
    # no training sample: the diagnosis says so, never guesses
    unknown = overfitting.diagnose(_evals([1.0, 0.5, 0.9]), "f1", True, 20, 30)
    assert unknown["verdict"] == "unknown" and "gap_at_best" not in unknown


def test_a_diagnosis_round_trips_through_its_tags():
    found = overfitting.diagnose(_evals([1.0, 0.8, 0.7, 0.72, 0.74, 0.76], [1, 0.8, 0.6, 0.4,
                                 0.3, 0.2]), "f1", True, 30, 60)  # fmt: skip
    found["eval_every"] = 10
    back = overfitting.from_tags({"other": "x", **overfitting.tags(found)})
    assert back["verdict"] == "onset" and back["onset_step"] == 30 and back["eval_every"] == 10
    assert back["gap_at_best"] == pytest.approx(found["gap_at_best"], rel=1e-3)
    assert overfitting.from_tags({"xp.project": "digits"}) == {}  # a run from before diagnoses


def test_a_repeat_counts_overfit_seeds_and_suggests_a_patience():
    def seed(verdict, onset, wait, after, steps=100):
        d = {"verdict": verdict, "wait_before_best": wait, "evals_after_best": after,
             "eval_every": 10, "steps": steps}  # fmt: skip
        return {**d, "onset_step": onset} if onset else d

    view = overfitting.over_seeds([seed("onset", 40, 1, 6), seed("severe", 60, 2, 4),
                                   seed("none", None, 0, 0), {}])  # fmt: skip
    assert (view["seeds"], view["overfit"], view["severe"]) == (3, 2, 1)
    assert view["median_onset_step"] == 50
    # patience 3 keeps every seed's best (the longest wait before a best was 2) and stops the
    # seeds that trained 6 and 4 evaluations past theirs: (6 - 3) + (4 - 3) evaluations saved
    assert (view["patience"], view["patience_stops"], view["steps_saved"]) == (3, 2, 40)
    text = overfitting.sentence(view)
    assert text.startswith("2 of 3 seeds overfit (1 severely; median onset at step 50)")
    assert "eval.patience=3" in text and "saving 40 of 300 steps" in text
    assert "runs older than" in overfitting.sentence(overfitting.over_seeds([{}]))


# -- the monitor ----------------------------------------------------------------------------------
def _healthy_losses(n: int, rng: np.random.Generator) -> np.ndarray:
    """A fine-tuning loss: falling, with mini-batch noise that shrinks with it."""
    level = 0.3 + 1.2 * np.exp(-np.arange(n) / 40)
    return level * rng.lognormal(0, 0.25, n)


def _run(monitor: Monitor, losses, grads, start: int = 1):
    events = []
    for i, (loss, grad) in enumerate(zip(losses, grads, strict=True)):
        events += monitor.on_step(start + i, float(loss), float(grad))
    return events


def test_the_monitor_stays_quiet_on_noisy_healthy_training():
    rng = np.random.default_rng(0)
    for _ in range(20):
        losses = _healthy_losses(300, rng)
        grads = 2.0 * rng.lognormal(0, 0.3, 300)
        assert _run(Monitor(MonitorConfig(), warmup_steps=15), losses, grads) == []


def test_the_monitor_catches_a_spike_an_explosion_and_a_divergence_once_each():
    rng = np.random.default_rng(1)
    losses, grads = _healthy_losses(200, rng), 2.0 * rng.lognormal(0, 0.3, 200)
    losses[80] *= 30  # one bad batch
    grads[80:83] *= 50  # three steps of exploding gradients: one episode
    losses[150:] *= 8  # the loss leaves its level for good
    events = _run(Monitor(MonitorConfig(), warmup_steps=15), losses, grads)
    found = [(e.kind, e.step) for e in events]
    assert ("spike", 81) in found and ("grad", 81) in found
    assert [k for k, _ in found].count("grad") == 1  # an episode is one event
    divergence = [s for k, s in found if k == "divergence"]
    assert len(divergence) == 1 and 151 <= divergence[0] <= 151 + 3  # within a few steps
    nan = Monitor(MonitorConfig(), warmup_steps=0).on_step(1, math.nan, math.nan)
    assert [e.kind for e in nan] == ["divergence"] and "nan" in nan[0].message


def test_the_monitor_resumes_from_its_state_exactly():
    rng = np.random.default_rng(2)
    losses, grads = _healthy_losses(160, rng), 2.0 * rng.lognormal(0, 0.3, 160)
    losses[120] *= 40
    whole = _run(Monitor(MonitorConfig(), 15), losses, grads)
    first = Monitor(MonitorConfig(), 15)
    _run(first, losses[:100], grads[:100])
    state = json.loads(json.dumps(first.state_dict()))  # (as a checkpoint keeps it)
    rest = _run(Monitor(MonitorConfig(), 15, state), losses[100:], grads[100:], start=101)
    assert [e.to_json() for e in rest] == [e.to_json() for e in whole] and rest


def test_a_nan_event_is_strict_json_and_a_skipped_step_is_not_an_explosion():
    nan = Monitor(MonitorConfig(), 0).on_step(1, math.nan, math.inf)[0]
    sent = json.loads(json.dumps(nan.to_json(), allow_nan=False))  # a webhook's parser
    assert sent["value"] is None and sent["kind"] == "divergence"
    monitor = Monitor(MonitorConfig(), 0)
    for step in range(1, 40):  # an fp16 run: the scaler skips overflowing steps (no norm)
        assert monitor.on_step(step, 1.0, None if step % 7 == 0 else 2.0) == []


def test_events_before_a_checkpoint_travel_with_it(tmp_path):
    """A run resumed on another machine has no journal: the checkpoint's events count."""
    from xp.train.monitoring import Watch

    class Tracker:
        run_id = "r"

        def __init__(self):
            self.metrics, self.tags = [], {}

        def log_metrics(self, metrics, step):
            self.metrics.append((step, metrics))

        def set_tags(self, tags):
            self.tags.update(tags)

    rng = np.random.default_rng(3)
    losses, grads = _healthy_losses(120, rng), 2.0 * rng.lognormal(0, 0.3, 120)
    losses[[40, 100]] *= 40
    first = Watch(MonitorConfig(), Tracker(), tmp_path / "here", 15, lambda m: None)
    for i in range(60):
        first.step(i + 1, float(losses[i]), float(grads[i]))
    state = first.state_dict()
    said: list[str] = []
    elsewhere = Watch(MonitorConfig(), Tracker(), tmp_path / "there", 15, said.append, state)
    for i in range(60, 120):
        elsewhere.step(i + 1, float(losses[i]), float(grads[i]))
    assert [(e["kind"], e["step"]) for e in elsewhere.events if e["kind"] == "spike"] == [
        ("spike", 41), ("spike", 101)]  # fmt: skip
    assert elsewhere.counts()["spike"] == 2 and not any("step 41" in m for m in said)
    assert (101, {"monitor/spike": 2.0}) in elsewhere.tracker.metrics


def test_a_stall_is_evaluations_without_improvement():
    monitor = Monitor(MonitorConfig(stall_evals=3), warmup_steps=0)
    raised = [monitor.on_eval(10 * i, improved) for i, improved in
              enumerate([True, False, False, False, False, True, False])]  # fmt: skip
    assert [len(r) for r in raised] == [0, 0, 0, 1, 0, 0, 0]
    assert raised[3][0].kind == "stall" and raised[3][0].step == 30
    assert Monitor(MonitorConfig(stall_evals=None), 0).on_eval(1, False) == []


def test_monitor_settings_out_of_range_are_refused_and_never_change_the_hash(repo):
    for bad in ("monitor.spike_z=-1", "monitor.grad_factor=0.5", "monitor.on_spike=panic",
                "monitor.window=2", "monitor.window=6", "eval.train_sample=-1"):  # fmt: skip
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            cfg(repo, bad)
    watched = cfg(repo, "monitor.spike_z=4", "monitor.on_divergence=stop", "eval.train_sample=0")
    assert config_hash(watched) == config_hash(cfg(repo))


# -- in a training run ----------------------------------------------------------------------------
def test_a_run_records_its_training_sample_diagnosis_and_a_quiet_monitor(repo):
    result = train(cfg(repo), repo)
    run = mlflow.get_run(result.run_id)
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["xp.diagnosis.overfitting"] in ("none", "severe") or tags[
        "xp.diagnosis.overfitting"
    ].startswith("onset at step ")
    assert {"train_sample/loss", "train_sample/f1"} <= set(metrics)
    history = mlflow.MlflowClient().get_metric_history(result.run_id, "train_sample/loss")
    assert [m.step for m in history] == [5, 10, 15, 20, 25, 30]  # with every validation
    assert tags["xp.monitor.events"] == "0" and "xp.monitor.first" not in tags
    assert {metrics[f"monitor/{k}"] for k in ("spike", "grad", "divergence", "stall")} == {0.0}
    local = mlflow.artifacts.download_artifacts(run_id=result.run_id, artifact_path="diagnosis")
    record = json.loads((Path(local) / "overfitting.json").read_text())
    assert len(record["evaluations"]) == 6
    assert record["train_sample"] == 200  # as many as the validation set
    local = Path(mlflow.artifacts.download_artifacts(run_id=result.run_id, artifact_path="errors"))
    assert {p.name for p in local.iterdir()} == {"errors.json", "confusion.png", "wrong.png"}
    found = json.loads((local / "errors.json").read_text())
    assert (
        found["n_wrong"]
        == len(found["wrong_indices"])
        == round(396 * (1 - result.test["accuracy"]))
    )
    assert len(found["wrong"][0]["input"]) == 8  # the image itself, 8 rows of 8 pixels
    assert run.data.tags["xp.errors.wrong"] == str(found["n_wrong"])
    off = train(cfg(repo, "eval.train_sample=0"), repo)
    off_run = mlflow.get_run(off.run_id)
    assert off_run.data.tags["xp.diagnosis.overfitting"].startswith("unknown")
    assert off.test == result.test  # evaluating the training sample changes nothing trained


def test_an_injected_lr_fault_is_caught_notified_and_stops_the_run(repo, tmp_path, monkeypatch):
    got, receiver = tmp_path / "events.jsonl", tmp_path / "receive.py"
    receiver.write_text("import sys\nopen(sys.argv[1], 'a').write(sys.stdin.read() + '\\n')\n")
    notify = f"monitor.notify={sys.executable} {receiver} {got}"
    monkeypatch.setenv("XP_FAULT_LR", "20:300")
    seen = []
    result = train(cfg(repo, "monitor.on_spike=stop", notify), repo,
                   events=lambda kind, info: seen.append((kind, info)))  # fmt: skip
    assert (result.outcome, result.status) == ("failed", "FAILED")
    assert result.message.startswith("stopped by the monitor: loss spike at step 21")
    assert result.steps == 21  # the 9 steps after it were never trained
    said = [i["message"] for k, i in seen if k == "warning" and "monitor" in i["message"]]
    assert said and said[0].startswith("monitor: loss spike at step 21")
    run = mlflow.get_run(result.run_id)
    assert run.info.status == "FAILED" and run.data.tags["xp.failure"] == result.message
    assert run.data.tags["xp.monitor.first"].startswith("loss spike at step 21")
    assert run.data.metrics["monitor/spike"] == 1.0
    local = mlflow.artifacts.download_artifacts(run_id=result.run_id, artifact_path="monitor")
    record = json.loads((Path(local) / "events.json").read_text())
    assert record["counts"]["spike"] == 1 and record["events"][0]["step"] == 21
    notified = [json.loads(line) for line in got.read_text().splitlines() if line]
    assert [(e["kind"], e["step"]) for e in notified] == [
        (e["kind"], e["step"]) for e in record["events"]
    ] and notified[0]["run_id"] == result.run_id


def test_a_failing_or_hanging_notify_command_never_stops_training(repo, monkeypatch):
    monkeypatch.setenv("XP_FAULT_LR", "12:300")
    failing = "sh -c 'cat >/dev/null; echo webhook refused >&2; exit 3'"
    for notify, why in (
        (failing, "exit 3: webhook refused"),
        ("sleep 30", "no answer within 0.2 s"),
    ):
        said: list[str] = []
        hear = said.append
        config = cfg(repo, f"monitor.notify={notify}", "monitor.notify_timeout=0.2")
        result = train(
            config, repo, events=lambda kind, info, hear=hear: hear(info.get("message", ""))
        )
        assert result.outcome == "ok" and result.steps == 30
        failures = [m for m in said if "monitor.notify failed" in m]
        assert len(failures) == 1 and why in failures[0]  # said once, however many events
        assert (
            mlflow.get_run(result.run_id)
            .data.tags["xp.monitor.notify_error"]
            .startswith(why.split(" ")[0])
        )


def test_a_stall_set_to_stop_is_early_stopping_with_its_best_checkpoint(repo):
    stop = ["monitor.stall_evals=2", "monitor.on_stall=stop", "eval.min_delta=10"]
    result = train(cfg(repo, *stop), repo)  # nothing improves by 10 after the first evaluation
    assert (result.outcome, result.steps) == ("early_stopped", 15)
    run = mlflow.get_run(result.run_id)
    assert run.data.tags["xp.monitor.stopped"].startswith("stall at step 15")
    assert "test/f1" in run.data.metrics and "xp.failure" not in run.data.tags


def test_a_notify_command_that_cannot_run_is_refused_before_any_run(repo):
    with pytest.raises(XpError, match="monitor.notify: command 'no-such-notifier' not found"):
        train(cfg(repo, "monitor.notify=no-such-notifier --to ops"), repo)
    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []


def test_the_report_and_note_say_how_many_seeds_overfit():
    class Seed:
        def __init__(self, seed, verdict, events):
            self.seed, self.metrics = seed, {"monitor/spike": events, "monitor/grad": 0.0}
            self.diagnosis = {"verdict": verdict, "onset_step": 40, "wait_before_best": 1,
                              "evals_after_best": 5, "eval_every": 10, "steps": 100}  # fmt: skip

    summary = {"diagnosis": diagnosis.over_seeds([Seed(1, "onset", 0.0), Seed(2, "none", 2.0)])}
    lines = diagnosis.sentences(summary)
    assert lines[0].startswith("overfitting: 1 of 2 seeds overfit (0 severely; median onset")
    assert lines[1] == "monitor: 2 events (spike 2) in 1 of 2 seeds (seed 2)"


# -- where a person looks -------------------------------------------------------------------------
def test_xp_diagnose_reads_a_repeat_and_a_run_from_the_store(digits_groups):
    repo, env, parent = digits_groups["repo"], digits_groups["env"], digits_groups["ids"]["strong"]
    shown = run(["xp", "diagnose", parent], repo, env=env).stdout
    lines = dict(line.strip().split(": ", 1) for line in shown.splitlines()[1:])
    assert shown.startswith(f"repeat run {parent}")
    assert lines["seeds"] == "3 (3 succeeded)" and lines["data audit"] == "none"
    assert re.fullmatch(r"\d of 3 seeds overfit.*", lines["overfitting"])
    assert lines["monitor"].endswith("over 3 seeds") or "in seeds" in lines["monitor"]
    assert {f"seed {s}" for s in (1, 2, 3)} <= set(lines)
    found = json.loads(run(["xp", "diagnose", parent, "--format", "json"], repo, env=env).stdout)
    assert found["diagnosis"]["overfitting"]["seeds"] == 3
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
        seed_run = mlflow.search_runs(
            filter_string=f"tags.`xp.group` = '{parent}'",
            search_all_experiments=True,
            output_format="list",
        )[0]
        report = mlflow.artifacts.download_artifacts(run_id=parent, artifact_path="report")
        note = mlflow.get_run(parent).data.tags["mlflow.note.content"]
    one = run(["xp", "diagnose", seed_run.info.run_id], repo, env=env).stdout
    assert f"train run {seed_run.info.run_id}" in one and "  overfitting: " in one
    assert "  monitor: " in one and "  data audit: none" in one
    text = (Path(report) / "report.md").read_text()
    assert "## Diagnosis" in text and "seeds overfit" in text and "| overfitting |" in text
    assert "- overfitting: " in note and "- monitor: " in note and "- errors: " in note
    assert "## Every seed gets these wrong (hard or mislabelled)" in text
    assert (Path(report) / "hard_examples.png").exists() and "forgetting" in lines


def test_xp_diagnose_says_what_an_old_run_lacks_and_refuses_other_ids(repo, monkeypatch):
    with mlflow.start_run() as old:  # a training run recorded before diagnoses existed
        mlflow.set_tags({"xp.kind": "train", "xp.outcome": "ok"})
    shown = run(["xp", "diagnose", old.info.run_id], repo).stdout
    assert "  overfitting: not recorded" in shown and "  monitor: not recorded" in shown
    assert "  data audit: not recorded" in shown
    bad = run(["xp", "diagnose", "0" * 32], repo, check=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert bad.stderr.startswith("error: unknown run id")


# -- forgetting -----------------------------------------------------------------------------------
def test_linear_cka_is_one_for_the_same_features_up_to_rotation_and_scale():
    from scipy.stats import ortho_group

    from xp.train.retention import linear_cka

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 16))
    rotated = 3.0 * x @ ortho_group.rvs(16, random_state=1)
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, rotated) == pytest.approx(1.0)
    assert linear_cka(x, rng.normal(size=(200, 16))) < 0.2
    assert 0.3 < linear_cka(x, x + rng.normal(size=(200, 16))) < 0.9


def test_digits_records_what_fine_tuning_cost_the_backbone(repo):
    full = train(cfg(repo, "optim.lr=0.003"), repo)
    frozen = train(cfg(repo, "train.freeze_layers=3"), repo)
    got = {r.run_id: mlflow.get_run(r.run_id).data.metrics for r in (full, frozen)}
    for r in (full, frozen):
        m = got[r.run_id]
        assert m["retention/accuracy_before"] > 0.95  # the backbone knew digits 0-4
        assert m["retention/drop"] == pytest.approx(m["retention/accuracy_before"]
                                                    - m["retention/accuracy"])  # fmt: skip
        points = mlflow.MlflowClient().get_metric_history(r.run_id, "retention/accuracy")
        assert [p.step for p in points] == [0, r.steps]  # before, and at the kept checkpoint
    # a frozen backbone forgets nothing and does not move; a full fine-tune at 3x the LR does
    kept, moved = got[frozen.run_id], got[full.run_id]
    assert kept["retention/drop"] == 0 and kept["retention/cka"] == pytest.approx(1)
    assert moved["retention/drop"] > 0.02 and moved["retention/cka"] < 0.99
    run = mlflow.get_run(full.run_id)
    assert run.data.tags["xp.data.retention.md5"]  # the old task's data is versioned too


def test_a_text_model_s_wrong_answers_come_with_the_words_that_drove_them(repo, tiny_bert):
    config = load_config("vader", [f"model.name={tiny_bert}", "train.max_steps=4",
                                   "eval.every=2"], repo / "projects")  # fmt: skip
    result = train(config, repo)
    local = Path(mlflow.artifacts.download_artifacts(run_id=result.run_id, artifact_path="errors"))
    found = json.loads((local / "errors.json").read_text())
    first = found["wrong"][0]
    assert isinstance(first["input"], str) and first["attributions"]
    assert sum(abs(v) for _, v in first["attributions"]) == pytest.approx(1, abs=1e-3)
    page = (local / "attributions.html").read_text()
    assert page.count("<p><b>#") == min(10, found["n_wrong"]) and "<span" in page


def test_a_retention_set_the_old_head_cannot_predict_is_refused_before_any_run(repo, tiny_bert):
    with np.load(repo / "data/digits/pretrain.npz") as z:
        X, y = z["X"], z["y"] + 3  # digits 3..7: the old head knows 0..4
    np.savez(repo / "data/digits/shifted.npz", X=X, y=y)
    with pytest.raises(XpError, match=r"labels 3 to 7 cannot be the checkpoint's own task"):
        train(cfg(repo, "eval.retention=data/digits/shifted.npz"), repo)
    text = load_config("vader", [f"model.name={tiny_bert}", "eval.retention=data/vader/test.csv",
                                 "train.max_steps=2"], repo / "projects")  # fmt: skip
    with pytest.raises(XpError, match="has no task of its own that xp can measure"):
        train(text, repo)  # a transformer's checkpoint without a head of its own
    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []


def test_the_forgetting_line_reads_a_summary_with_one_seed():
    """A summary's JSON turns one seed's NaN interval into null: the line still reads."""
    one = {"n": 1, "mean": 0.1043, "ci95_low": None, "ci95_high": None}
    stats = {"retention/drop": {"successful": one},
             "retention/accuracy": {"successful": {"n": 1, "mean": 0.869}},
             "retention/accuracy_before": {"successful": {"n": 1, "mean": 0.9734}},
             "retention/cka": {"successful": {"n": 1, "mean": 0.862}}}  # fmt: skip
    assert diagnosis.forgetting_sentence(stats) == (
        "forgetting: the pre-trained task's accuracy 0.9734 -> 0.8690 (drop 0.1043, 95% CI [n/a, "
        "n/a]); the backbone's features at CKA 0.862 with the pre-trained ones (1: unmoved)"
    )
    assert diagnosis.forgetting_sentence({}) is None


def test_before_is_the_pre_trained_model_even_with_re_initialised_layers(repo, monkeypatch):
    from xp.train import retention

    plain = train(cfg(repo), repo)
    reinit = train(cfg(repo, "model.reinit_layers=1"), repo)
    before = {r.run_id: mlflow.get_run(r.run_id).data.metrics for r in (plain, reinit)}
    assert before[reinit.run_id]["retention/accuracy_before"] == pytest.approx(
        before[plain.run_id]["retention/accuracy_before"])  # fmt: skip
    monkeypatch.setattr(retention, "prepare", lambda *a, **k: retention.Retention(None, None))
    unmeasured = train(cfg(repo, "model.reinit_layers=1"), repo)
    assert unmeasured.test == reinit.test  # measuring "before" drew nothing the run draws from
