"""Script projects: a command template of the user's, its params and data, run and judged by xp.

The scripts here are tiny plain loops on `xp.integrations.start()` (a second or two each); the HF
`Trainer` example that ships (projects/vader_trainer) runs on a tiny BERT.
"""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import mlflow
import pytest
import yaml

from tests.conftest import MAIN, run
from xp.config import ConfigError, ScriptConfig, config_hash, flatten, load_config, render
from xp.record import supervise

PROJECTS = MAIN / "projects"

# a plain loop on xp's small API: N steps, a checkpoint at each, its score a function of its
# init seed (so seeds differ). Seeds named in TEST_FAIL crash, in TEST_NO_TEST log no test
# metric, in TEST_OWN_RUN open a run of their own; TEST_STOP_PARENT_AT=N sends SIGTERM to xp at
# step N; TEST_IGNORE_DATA_SEED=1 shuffles with a fixed seed whatever its data seed.
LOOP = """
import os, signal, sys, time
import mlflow
from xp.integrations import start

seed = sys.argv[2]
def named(var):
    return seed in os.environ.get(var, "").split(",")

if named("TEST_OWN_RUN"):
    os.environ.pop("MLFLOW_RUN_ID")
    with mlflow.start_run():
        mlflow.log_metric("test/f1", 0.5)
    sys.exit(0)
run = start()
import numpy as np, torch
torch.manual_seed(run.seeds["dropout"])
data_seed = 0 if os.environ.get("TEST_IGNORE_DATA_SEED") else run.seeds["data_order"]
run.fingerprint(data_order=np.random.default_rng(data_seed).permutation(100))
state = run.load_checkpoint() or {"step": 0}
print(f"resumed at {state['step']}" if run.resume_from else "fresh", flush=True)
stop_at = int(os.environ.get("TEST_STOP_PARENT_AT", "0"))
for step in range(state["step"] + 1, int(sys.argv[1]) + 1):
    run.log({"train/loss": 1.0 / step, "train/lr": 0.1}, step)
    state = {"step": step}
    run.save_checkpoint(state)
    if step == stop_at and not run.resume_from:
        os.kill(os.getppid(), signal.SIGTERM)  # xp passes it on to this process
        while not run.should_stop:
            time.sleep(0.01)
    if run.should_stop:
        run.stopped()
if named("TEST_FAIL"):
    print("Traceback (most recent call last):", file=sys.stderr)
    print("ValueError: the data has no column 'txt'", file=sys.stderr)
    sys.exit(3)
if not named("TEST_NO_TEST"):
    score = 0.5 + (run.seeds["init"] % 1000) / 10000
    run.finish(test={"f1": score, "loss": 1 - score}, best_val={"f1": score})
"""

CONFIG = {
    "task": "classification",
    "command": "python projects/loop/train.py {steps} {seed} --lr {lr} --init {seed.init} "
               "--order {seed.data_order} --out {run_dir} [--resume {resume}]",
    "params": {"steps": 6, "lr": 0.001, "name": "a b"},
    "data": {"train": "data/vader/train.csv", "validation": "data/vader/validation.csv",
             "test": "data/vader/test.csv"},
}  # fmt: skip


def add_project(root: Path, name: str = "loop", config: dict | None = None, script: str = LOOP):
    folder = root / "projects" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(
        f"# xp train {name}\n" + yaml.safe_dump(config or CONFIG, sort_keys=False)
    )
    (folder / "train.py").write_text(textwrap.dedent(script))
    return folder


@pytest.fixture
def loop(tmp_path):
    add_project(tmp_path)
    return tmp_path / "projects"


# -- the config ---------------------------------------------------------------------------------
def test_the_shipped_script_project_validates_and_hashes_without_its_seeds():
    cfg = load_config("vader_trainer", [], PROJECTS)
    assert isinstance(cfg, ScriptConfig)
    assert cfg.eval.metric == "f1" and cfg.params["lr"] == pytest.approx(1e-4)
    other_seed = load_config("vader_trainer", ["seed=7", "train.threads=1"], PROJECTS)
    assert config_hash(other_seed) == config_hash(cfg)
    assert config_hash(load_config("vader_trainer", ["lr=3e-5"], PROJECTS)) != config_hash(cfg)
    assert flatten(cfg)["params.lr"] == "0.0001"


def test_a_generation_script_is_judged_by_its_loss_lower_being_better(tmp_path):
    from xp.config import higher_is_better

    add_project(tmp_path, "loop", {**CONFIG, "task": "generation"})
    cfg = load_config("loop", [], tmp_path / "projects")
    assert cfg.eval.metric == "loss" and not higher_is_better("test/perplexity")
    with pytest.raises(ConfigError, match="eval.metric='f1' is not a generation metric; use one "
                                          "of loss, perplexity, mean_token_accuracy"):  # fmt: skip
        load_config("loop", ["eval.metric=f1"], tmp_path / "projects")


def test_a_param_is_overridden_by_name_with_its_declared_type(loop):
    cfg = load_config("loop", ["lr=1", "params.steps=3", "name=7"], loop)
    assert cfg.params == {"steps": 3, "lr": 1.0, "name": "7"}
    assert isinstance(cfg.params["lr"], float)
    with pytest.raises(ConfigError, match=r"steps=2\.5: the project declares steps as an integer"):
        load_config("loop", ["steps=2.5"], loop)
    with pytest.raises(ConfigError, match=r"unknown param 'lrr' for project 'loop'; its params: "
                                          r"steps, lr, name"):  # fmt: skip
        load_config("loop", ["lrr=1e-3"], loop)
    with pytest.raises(ConfigError, match="unknown config key 'train.epochs'"):
        load_config("loop", ["train.epochs=3"], loop)


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("python projects/loop/train.py {lrr}", r"command: unknown placeholder \{lrr\}; known: "
                                                r"\{seed\}, \{seed.init\}"),
        ("python projects/loop/train.py {lr!r}", "conversions are not supported"),
        ("python projects/loop/train.py {", "a literal brace is written"),
        ("python projects/loop/nothere.py", r"runs projects/loop/nothere\.py, which does not "
                                            "exist"),
    ],
)  # fmt: skip
def test_a_bad_template_is_one_line_before_anything_runs(loop, command, expected):
    add_project(loop.parent, config={**CONFIG, "command": command})
    with pytest.raises(ConfigError, match=expected):
        load_config("loop", [], loop)


def test_a_param_may_not_take_a_placeholder_name(loop):
    add_project(loop.parent, config={**CONFIG, "params": {"run_dir": 1}})
    with pytest.raises(ConfigError, match="param 'run_dir': the name is xp's own placeholder"):
        load_config("loop", [], loop)


def test_render_fills_quotes_and_drops_an_incomplete_optional_group(loop):
    cfg = load_config("loop", ["lr=2e-5"], loop)
    values = {"seed": 1, "seed.init": 11, "seed.data_order": 12, "run_dir": "/r d", "resume": ""}
    argv = render(cfg, values, "/venv/python")
    assert argv == ["/venv/python", "projects/loop/train.py", "6", "1", "--lr", "2e-05", "--init",
                    "11", "--order", "12", "--out", "/r d"]  # fmt: skip
    argv = render(cfg, {**values, "resume": "/r d/ck"}, "/venv/python")
    assert argv[-2:] == ["--resume", "/r d/ck"]
    cfg.command = "python x.py --lr {lr:.1e} --name {name}"
    assert render(cfg, {}, "py")[2:] == ["--lr", "2.0e-05", "--name", "a b"]


# -- a seed of a script -------------------------------------------------------------------------
def train(root: Path, *args: str, env: dict | None = None, check: bool = False):
    return run([sys.executable, "-m", "xp.cli", "train", "loop", *args], root, env=env,
               check=check)  # fmt: skip


def only_run(project: str = "loop"):
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string=f"tags.`xp.project` = '{project}'")  # fmt: skip
    assert len(runs) == 1, runs
    return runs[0]


def test_a_script_seed_is_recorded_like_xps_own(repo):
    add_project(repo)
    proc = train(repo, "seed=3", check=True)
    r = only_run()
    assert r.info.status == "FINISHED" and r.data.tags["xp.outcome"] == "ok"
    params, tags = r.data.params, r.data.tags
    assert params["seed"] == "3" and params["params.lr"] == "0.001"
    assert {"seed.init", "seed.data_order", "seed.dropout"} <= set(params)
    assert tags["xp.command"] == "xp train loop seed=3"
    assert tags["xp.data.test.md5"] and tags["xp.git.commit"] != "none"
    assert tags["xp.env.numerics"] == "native" and tags["xp.script.exit_code"] == "0"
    argv = tags["xp.script.argv"]
    assert f"--init {params['seed.init']} --order {params['seed.data_order']}" in argv
    assert "--resume" not in argv  # nothing to resume: the optional group is dropped
    score = 0.5 + (int(params["seed.init"]) % 1000) / 10000
    assert r.data.metrics["test/f1"] == pytest.approx(score)
    assert len(mlflow.MlflowClient().get_metric_history(r.info.run_id, "train/loss")) == 6
    assert "test  " in proc.stdout and f"ok run {r.info.run_id}" in proc.stdout


def test_sigterm_is_passed_to_the_script_which_checkpoints_and_resumes(repo):
    add_project(repo)
    stopped = train(repo, env={"TEST_STOP_PARENT_AT": "2"})
    assert stopped.returncode == 143, stopped.stderr
    r = only_run()
    assert r.info.status == "KILLED" and r.data.tags["xp.checkpoint"].endswith("last")
    assert f"resume with --resume {r.info.run_id}" in stopped.stderr
    resumed = train(repo, "--resume", r.info.run_id, check=True)
    assert "resumed at 2" in resumed.stdout
    r = only_run()
    assert r.info.status == "FINISHED" and "test/f1" in r.data.metrics
    steps = [m.step for m in mlflow.MlflowClient().get_metric_history(r.info.run_id, "train/loss")]
    assert sorted(steps) == [1, 2, 3, 4, 5, 6]
    assert f"--resume {r.data.tags['xp.checkpoint']}" in r.data.tags["xp.script.argv"]


def test_untracked_a_script_runs_and_its_exit_code_decides(repo):
    add_project(repo)
    env = {k: "" for k in os.environ if k.startswith("MLFLOW_")}
    proc = train(repo, "--no-track", env=env, check=True)
    assert "(tracking off)" in proc.stdout and "ok run notrack-" in proc.stdout
    assert not (repo / "mlflow.db").exists()


def test_a_repeat_of_a_script_judges_each_seed_and_resumes_a_killed_one(repo):
    """One repeat, each seed a way a script ends: 1 killed by kill -9 at step 4 (the repeat run
    again resumes it from its checkpoint), 2 crashes, 3 logs no test metric, 4's loss turns NaN,
    5 opens a run of its own."""
    add_project(repo)
    cmd = [sys.executable, "-m", "xp.cli", "repeat", "loop", "--seeds", "5", "--jobs", "2"]
    env = {"TEST_FAIL": "2", "TEST_NO_TEST": "3", "XP_FAULT_NAN_SEEDS": "4", "TEST_OWN_RUN": "5"}
    first = run(cmd, repo, env={**env, supervise.FAULT_ENV: "step@4",
                                supervise.FAULT_SEEDS_ENV: "1"}, check=False)  # fmt: skip
    assert "seed 1: exit 137" in first.stdout  # killed alone: the other seeds go on
    killed = only_train_run(seed=1)
    assert killed.info.status == "KILLED"
    second = run(cmd, repo, env=env, check=False)
    parent = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                filter_string="tags.`xp.kind` = 'repeat'")[0]  # fmt: skip
    by_seed = {int(r.data.params["seed"]): r for r in children(parent.info.run_id)}
    one = by_seed[1]
    assert one.info.run_id == killed.info.run_id and one.info.status == "FINISHED"
    steps = [
        m.step for m in mlflow.MlflowClient().get_metric_history(one.info.run_id, "train/loss")
    ]
    assert sorted(steps) == [1, 2, 3, 4, 5, 6]  # resumed at its step-4 checkpoint, once each
    crashed = by_seed[2]
    assert crashed.info.status == "FAILED" and "xp.outcome" not in crashed.data.tags
    assert crashed.data.tags["xp.failure"].startswith("the script exited with code 3: ")
    assert "ValueError: the data has no column 'txt'" in crashed.data.tags["xp.failure"]
    assert (
        by_seed[3]
        .data.tags["xp.failure"]
        .startswith("seed 3 finished but logged no test/f1; log it with mlflow.log_metric")
    )
    assert by_seed[4].data.tags["xp.failure"] == "loss became nan at step 1"
    own = by_seed[5].data.tags["xp.failure"]
    assert (
        "the script opened run(s) " in own and "of its own instead of the run it was handed" in own
    )
    assert parent.data.metrics["test/f1/n"] == 1
    assert parent.data.tags["xp.seed_check"] == "ok"
    assert "seed 1: done" in second.stdout and "failed seeds: 2, 3, 4, 5" in second.stdout


def only_train_run(seed: int):
    runs = mlflow.search_runs(
        search_all_experiments=True,
        output_format="list",
        filter_string=f"tags.`xp.kind` = 'train' AND params.seed = '{seed}'",
    )
    assert len(runs) == 1, runs
    return runs[0]


def children(parent_id: str):
    return mlflow.search_runs(
        search_all_experiments=True,
        output_format="list",
        filter_string=f"tags.`xp.group` = '{parent_id}'",
    )


def test_a_repeat_says_when_the_script_ignores_its_data_seed(repo):
    add_project(repo, config={**CONFIG, "params": {**CONFIG["params"], "steps": 1}})
    cmd = [
        sys.executable,
        "-m",
        "xp.cli",
        "repeat",
        "loop",
        "--seeds",
        "3",
        "--jobs",
        "2",
        "--executor",
        "process",
    ]  # (the warm executor's seeds: the test above)
    proc = run(cmd, repo, env={"TEST_IGNORE_DATA_SEED": "1"})
    warning = "seeds 1-3 trained on the same data order: the script ignores its data seed"
    assert f"warning: {warning}" in proc.stderr
    parent = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                filter_string="tags.`xp.kind` = 'repeat'")[0]  # fmt: skip
    assert parent.data.tags["xp.seed_check"] == warning
    report = (repo / ".xp" / "runs" / parent.info.run_id / "report" / "report.md").read_text()
    assert warning in report
    kids = children(parent.info.run_id)
    assert len({r.data.tags["xp.fingerprint.data_order"] for r in kids}) == 1


# a script that evaluates a training sample beside validation: its validation loss turns up after
# step 20 while the sample's keeps falling, and one batch's loss spikes at step 30
DIAGNOSED = """
import sys
from xp.integrations import start
run = start()
for step in range(1, int(sys.argv[1]) + 1):
    loss = 50.0 if step == 30 else 1.0 / step ** 0.5 + 0.01 * (step % 3)
    run.log({"train/loss": loss, "train/grad_norm": 1.0 + 0.05 * (step % 4)}, step)
    if step % 5 == 0:
        val_loss = 0.5 + abs(step - 20) / 40
        run.log({"val/loss": val_loss, "val/f1": 1 - val_loss / 2, "train_sample/loss": 1 / step,
                 "train_sample/f1": 1 - 1 / (2 * step)}, step)
run.finish(test={"f1": 0.7, "loss": 0.3}, best_val={"f1": 0.75})
"""


def test_a_script_run_is_diagnosed_from_what_it_logged(repo):
    config = {**CONFIG, "command": "python projects/loop/train.py {steps} {seed}",
              "params": {"steps": 40}}  # fmt: skip
    add_project(repo, config=config, script=DIAGNOSED)
    train(repo, check=True)
    r = only_run()
    tags, metrics = r.data.tags, r.data.metrics
    assert tags["xp.monitor.replayed"] == "true" and metrics["monitor/spike"] == 1
    assert tags["xp.monitor.first"].startswith("loss spike at step 30")
    assert tags["xp.diagnosis.overfitting"] == "severe"  # +100% from its low
    assert tags["xp.diagnosis.onset_step"] == "20" and tags["xp.diagnosis.steps_after_best"] == "20"
    shown = run(["xp", "diagnose", r.info.run_id], repo).stdout
    assert "  overfitting: severe" in shown and "  monitor: 1 events (spike 1)" in shown
