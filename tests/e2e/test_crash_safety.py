"""A kill -9 anywhere loses nothing; killing a repeat's parent by any signal orphans nothing.

Each training test kills a real `xp train` process with SIGKILL at one point (fault injection,
`XP_FAULT_KILL`), resumes it with `--resume`, and compares the whole record with a run of the
same seed that was never interrupted: every point of every metric and the final metrics, with
`==`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest

from tests.conftest import BIN, copy_repo, default_signals, parent_id_in, run
from xp.record import supervise
from xp.record.track import metric_histories, repeated_points

pytestmark = pytest.mark.e2e

# 20 steps (2 epochs of 10), an evaluation and a resumable checkpoint every 5 steps
ARGS = ["digits", "train.epochs=2", "eval.every=5", "eval.patience=null",
        "train.checkpoint_every=5", "train.threads=1"]  # fmt: skip


def _run_id(stdout: str) -> str:
    return next(line.split()[1] for line in stdout.splitlines() if line.startswith("run "))


def _record(run_id: str, uri: str) -> tuple[dict, dict, int]:
    """(key -> sorted points, final metrics, points logged more than once)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        hist = metric_histories(run_id)
        final = dict(mlflow.MlflowClient().get_run(run_id).data.metrics)
    return hist, final, repeated_points(hist)


@pytest.fixture(scope="module")
def crash(built_repo, tmp_path_factory):
    """A copy of the repo, its store, and one uninterrupted run to compare with."""
    base = tmp_path_factory.mktemp("crash")
    repo = copy_repo(built_repo, base)
    uri = f"sqlite:///{base / 'mlflow.db'}"
    proc = run(["xp", "train", *ARGS], repo, env={"MLFLOW_TRACKING_URI": uri})
    return repo, uri, _record(_run_id(proc.stdout), uri)


# (checkpoint@N, a kill while a checkpoint is written, is among benchmarks/kill_trials.py's
# random kills; a checkpoint save is atomic)
@pytest.mark.parametrize(
    "point",
    ["setup", "step@13", "eval@15", "log_model"],
    ids=["before-first-checkpoint", "mid-epoch", "during-eval", "while-logging-the-model"],
)
def test_kill_9_then_resume_equals_the_uninterrupted_run(crash, point, monkeypatch):
    repo, uri, (ref_hist, ref_final, _) = crash
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    env = {"MLFLOW_TRACKING_URI": uri}
    killed = run(["xp", "train", *ARGS], repo, env={**env, supervise.FAULT_ENV: point},
                 check=False)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    run_id = _run_id(killed.stdout)
    assert mlflow.get_run(run_id).info.status == "RUNNING"  # nobody could say otherwise
    resumed = run(["xp", "train", "digits", "--resume", run_id], repo, env=env)
    assert f"ok run {run_id}" in resumed.stdout
    hist, final, dup = _record(run_id, uri)
    assert dup == 0  # no point twice
    assert hist == ref_hist  # every point of every metric, same steps, same values
    assert final == ref_final  # bit for bit
    done = mlflow.get_run(run_id)
    assert done.info.status == "FINISHED" and done.data.tags["xp.outcome"] == "ok"
    assert "xp.resume.mismatched_points" not in done.data.tags
    if point == "setup":  # killed before its first checkpoint: from step 0
        assert done.data.tags["xp.resumed_at_step"] == "0"
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    assert model.predict(np.zeros((1, 8, 8), dtype=np.float32)).shape == (1, 7)  # label, score, 5


def _seed_pids(repo, parent_id: str) -> dict[str, int]:
    from xp.record.track import children_of

    pids = {}
    for child in children_of(parent_id):
        pid = supervise.holder(repo, child.info.run_id)
        if pid:
            pids[child.info.run_id] = pid
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _start_and_kill(repo, args: list[str], sig: int) -> tuple[str, int]:
    """Start a repeat, wait until both seeds train, send `sig` to the parent; check that no seed
    outlives it (after a SIGKILL: by more than the grace period of 8 s and a poll). Returns the
    parent id and the parent's exit code."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    proc = subprocess.Popen(args, cwd=repo, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_signals)  # fmt: skip
    parent_id = parent_id_in(proc.stdout.readline())
    logs = [repo / ".xp" / "runs" / parent_id / f"seed-{s}.log" for s in (1, 2)]
    sizes = [log.stat().st_size if log.exists() else 0 for log in logs]

    def training(log, size):  # progress lines written by this attempt
        return log.exists() and "progress " in log.read_text()[size:]

    deadline = time.time() + 120
    while time.time() < deadline and not all(training(x, n) for x, n in zip(logs, sizes)):
        time.sleep(0.2)
    pids = _seed_pids(repo, parent_id)
    assert len(pids) == 2, "both seeds train"
    proc.send_signal(sig)
    killed_at = time.monotonic()
    proc.communicate(timeout=120)
    if sig != signal.SIGKILL:  # the parent stops its seeds and waits for them: none outlives it
        assert not any(_alive(p) for p in pids.values()), "a seed outlived its parent"
        return parent_id, proc.returncode
    while any(_alive(p) for p in pids.values()) and time.monotonic() - killed_at < 30:
        time.sleep(0.1)
    gone_after = time.monotonic() - killed_at
    assert not any(_alive(p) for p in pids.values()), "no orphan"
    # nobody is left to wait for them: each stops itself, with a hard exit after a grace period
    assert gone_after <= supervise.STOP_GRACE_SECONDS + 2, (
        f"seeds outlived their parent by {gone_after:.1f} s"
    )
    return parent_id, proc.returncode


def test_killing_a_repeats_parent_orphans_nothing_and_fails_no_seed(repo):
    """SIGTERM (a scheduler's preemption), then SIGKILL during the resumed run, then the same
    command once more: every seed ends with each of its steps recorded once, none failed."""
    from xp.record.track import children_of

    args = ["xp", "repeat", "digits", "train.epochs=40", "eval.every=50", "eval.patience=null",
            "train.checkpoint_every=100", "--seeds", "2", "--jobs", "2"]  # fmt: skip
    parent_id, code = _start_and_kill(repo, args, signal.SIGTERM)
    assert code == 143
    kids = children_of(parent_id)
    assert {k.info.status for k in kids} == {"KILLED"}  # checkpointed, resumable, not failed
    assert not any(k.data.tags.get("xp.outcome") for k in kids)
    assert mlflow.get_run(parent_id).info.status == "KILLED"

    again, code = _start_and_kill(repo, args, signal.SIGKILL)  # the parent dies without a word
    assert again == parent_id and code == -signal.SIGKILL
    kids = children_of(parent_id)
    assert len(kids) == 2 and {k.info.status for k in kids} == {"KILLED"}
    assert not any(k.data.tags.get("xp.outcome") for k in kids)
    assert mlflow.get_run(parent_id).info.status == "RUNNING"  # nobody was left to say

    done = run(args, repo)  # the same command resumes every seed
    assert parent_id_in(done.stdout) == parent_id and "resuming" in done.stdout
    kids = children_of(parent_id)
    assert len(kids) == 2 and {k.info.status for k in kids} == {"FINISHED"}
    client = mlflow.MlflowClient()
    for k in kids:  # resumed, not restarted: every step once
        assert k.data.tags["xp.resumed_at_step"] != "0"
        steps = [m.step for m in client.get_metric_history(k.info.run_id, "train/loss")]
        assert sorted(steps) == list(range(1, 401))
    parent = mlflow.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["xp.failed_seeds"] == ""
    assert parent.data.metrics["test/f1/n"] == 2


def test_a_seed_that_kills_its_worker_costs_that_seed_alone(repo):
    """One warm worker trains seeds 1, 2, 3 in turn; seed 2 takes it down with SIGKILL at step 3.
    Seed 3 gets a new worker and finishes; seed 2 alone is marked, and the same command resumes
    it from its record."""
    from xp.record.track import children_of

    args = ["xp", "repeat", *ARGS[:-1], "--seeds", "3", "--jobs", "1"]  # (it sets the threads)
    proc = run(args, repo, env={supervise.FAULT_ENV: "step@3", supervise.FAULT_SEEDS_ENV: "2"})
    assert "seed 2: exit -9" in proc.stdout and "failed seeds: 2" in proc.stdout
    parent_id = parent_id_in(proc.stdout)
    kids = {int(k.data.params["seed"]): k for k in children_of(parent_id)}
    assert {s: k.info.status for s, k in kids.items()} == {1: "FINISHED", 2: "RUNNING",
                                                           3: "FINISHED"}  # fmt: skip
    assert mlflow.get_run(parent_id).data.metrics["test/f1/n"] == 2

    again = run(args, repo)  # the same command: seed 2 resumes, 1 and 3 are not trained again
    assert "resuming" in again.stdout and "seed 1:" not in again.stdout
    kids = {int(k.data.params["seed"]): k for k in children_of(parent_id)}
    assert {k.info.status for k in kids.values()} == {"FINISHED"} and len(kids) == 3
    steps = [m.step for m in mlflow.MlflowClient().get_metric_history(
        kids[2].info.run_id, "train/loss")]  # fmt: skip
    assert sorted(steps) == list(range(1, 21))  # each step once
    assert mlflow.get_run(parent_id).data.metrics["test/f1/n"] == 3


def test_a_closed_stdout_never_stops_training(repo):
    """`xp train digits | head -n 1`: the reader goes away, the run goes on and finishes."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    proc = subprocess.Popen(["xp", "train", "digits", "seed=7", "train.epochs=2"], cwd=repo,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    first = proc.stdout.readline()
    proc.stdout.close()  # what `head -n 1` does after its line
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr
    run_id = first.split()[1]
    r = mlflow.get_run(run_id)
    assert r.info.status == "FINISHED" and r.data.tags["xp.outcome"] == "ok"


def test_kill_9_mid_event_or_mid_audit_loses_no_event_and_raises_none_twice(crash, monkeypatch):
    """An LR fault raises monitor events; a kill right after the first is journaled, then a
    resume, records the same events as the uninterrupted run: none lost, none twice. A kill
    while the audit is made leaves no run and no cache entry (the next attempt audits again)."""
    repo, uri, _ = crash
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    env = {"MLFLOW_TRACKING_URI": uri, "XP_FAULT_LR": "12:300"}

    def events_of(run_id: str) -> dict:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="monitor")
        record = json.loads((Path(local) / "events.json").read_text())
        return {**record, "events": [{**e, "run_id": None} for e in record["events"]]}

    whole = _run_id(run(["xp", "train", *ARGS], repo, env=env).stdout)
    reference = events_of(whole)
    first = reference["events"][0]
    assert first["step"] == 13 and first["kind"] == "spike"
    killed = run(["xp", "train", *ARGS], repo, check=False,
                 env={**env, supervise.FAULT_ENV: f"monitor_event@{first['step']}"})  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    run_id = _run_id(killed.stdout)
    resumed = run(["xp", "train", "digits", "--resume", run_id], repo, env=env)
    assert f"ok run {run_id}" in resumed.stdout
    assert events_of(run_id) == reference  # the same events, each once
    hist, _, dup = _record(run_id, uri)
    assert dup == 0
    assert {k: v for k, v in hist.items() if k.startswith("monitor/")} == {
        k: v for k, v in _record(whole, uri)[0].items() if k.startswith("monitor/")
    }

    audit_cache = repo / ".xp" / "audit"
    before = set(audit_cache.glob("*"))
    other_data = [*ARGS, "data.train_limit=299"]  # another reading of the data: a new audit
    cut = run(["xp", "train", *other_data], repo, check=False,
              env={"MLFLOW_TRACKING_URI": uri, supervise.FAULT_ENV: "audit"})  # fmt: skip
    assert cut.returncode == -signal.SIGKILL and "run " not in cut.stdout
    assert set(audit_cache.glob("*")) == before  # no cache entry, not even half of one
