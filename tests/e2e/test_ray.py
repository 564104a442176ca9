"""Seeds on a real Ray cluster (`ray start --head` on a free port), the repeat joining it by
address: the code is shipped (commit + diff), the data comes by md5 through a DVC remote, a seed
that kills its worker costs only itself, the same command resumes it, and a seed gives the same
metrics digit for digit as it does locally.

Ray is an optional extra (`pip install -e ".[ray]"`; `make test` installs it). Without it these
tests skip, except with `CI=true`, where they fail: CI must exercise Ray for real.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import mlflow
import pytest

from tests.conftest import BIN, default_signals, git, parent_id_in, run
from tests.e2e.conftest import free_port
from xp.record import supervise

pytestmark = pytest.mark.e2e

FAST = ["train.epochs=2", "eval.every=5", "eval.patience=null", "train.checkpoint_every=5"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A one-node Ray cluster of 2 CPUs: (its address, the folder its nodes keep repos in)."""
    try:
        import ray  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("Ray is not installed: CI must run the Ray tests (make test installs it)")
        pytest.skip("Ray is not installed (pip install -e '.[ray]')")
    home = tmp_path_factory.mktemp("rayhome")
    temp = tempfile.mkdtemp(prefix="xpray", dir="/tmp")  # (Ray's socket paths must be short)
    port = free_port()
    env = {"XP_RAY_HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0"}
    run([str(BIN / "ray"), "start", "--head", f"--port={port}", "--num-cpus=2", "--num-gpus=0",
         "--include-dashboard=false", f"--temp-dir={temp}", "--disable-usage-stats"],
        home, env=env)  # fmt: skip
    yield f"127.0.0.1:{port}", home
    run([str(BIN / "ray"), "stop", "--force"], home, check=False)


def _with_remote(repo: Path, remote: Path, push: bool = True) -> None:
    run(["dvc", "remote", "add", "-d", "--local", "team", str(remote)], repo)
    if push:
        run(["dvc", "push", "-q"], repo)


def _repeat(repo: Path, address: str, *extra: str, env: dict | None = None, check: bool = True):
    return run(["xp", "repeat", "digits", *FAST, *extra, "--executor", "ray",
                "--ray-address", address], repo, env=env, check=check)  # fmt: skip


def test_seeds_on_ray_crash_alone_resume_and_match_local(cluster, repo, tmp_path):
    address, home = cluster
    _with_remote(repo, tmp_path / "remote")
    args = ["--seeds", "3", "--jobs", "2"]
    proc = _repeat(repo, address, *args,
                   env={supervise.FAULT_ENV: "step@3", supervise.FAULT_SEEDS_ENV: "2"})  # fmt: skip
    assert "seed 2: exit -9" in proc.stdout and "failed seeds: 2" in proc.stdout, proc.stdout
    parent_id = parent_id_in(proc.stdout)
    from xp.record.track import children_of

    kids = {int(k.data.params["seed"]): k for k in children_of(parent_id)}
    assert {s: k.info.status for s, k in kids.items()} == {1: "FINISHED", 2: "RUNNING",
                                                           3: "FINISHED"}  # fmt: skip
    # the workers trained the driver's commit, and got the data by md5 from the remote
    assert {k.data.tags["xp.git.commit"] for k in kids.values()} == {git(repo, "rev-parse", "HEAD")}
    assert list(home.glob("*/data/digits/train.npz")) and list(home.glob("*/.dvc/cache/files"))

    again = _repeat(repo, address, *args)  # the same command: seed 2 alone trains again
    assert "resuming" in again.stdout and "seed 1:" not in again.stdout, again.stdout
    kids = {int(k.data.params["seed"]): k for k in children_of(parent_id)}
    assert {k.info.status for k in kids.values()} == {"FINISHED"} and len(kids) == 3
    steps = [m.step for m in mlflow.MlflowClient().get_metric_history(
        kids[2].info.run_id, "train/loss")]  # fmt: skip
    assert sorted(steps) == list(range(1, 21))  # each step once

    # seed 1 alone, here, with the threads the repeat gave it: the same metrics, digit for digit
    local = run(["xp", "train", "digits", *FAST, "seed=1", "train.threads=1"], repo)
    local_id = next(x.split()[1] for x in local.stdout.splitlines() if x.startswith("run "))
    want = mlflow.get_run(local_id).data.metrics
    got = kids[1].data.metrics
    assert {k: got[k] for k in want if k.startswith("test/")} == {
        k: v for k, v in want.items() if k.startswith("test/")
    }


def test_script_seeds_on_ray_match_the_same_seed_run_here(cluster, repo, tmp_path):
    """A script project (projects/digits_loop) on Ray: each seed a new process on a worker, on
    the driver's commit and the remote's data, with the numbers the same seed gives here."""
    address, _ = cluster
    _with_remote(repo, tmp_path / "remote")
    proc = run(["xp", "repeat", "digits_loop", "epochs=2", "--seeds", "2", "--jobs", "2",
                "--executor", "ray", "--ray-address", address], repo)  # fmt: skip
    from xp.record.track import children_of

    kids = {int(k.data.params["seed"]): k for k in children_of(parent_id_in(proc.stdout))}
    assert {k.data.tags["xp.outcome"] for k in kids.values()} == {"ok"} and len(kids) == 2
    assert {k.data.tags["xp.git.commit"] for k in kids.values()} == {git(repo, "rev-parse", "HEAD")}
    local = run(["xp", "train", "digits_loop", "epochs=2", "seed=2", "train.threads=1"], repo)
    local_id = next(x.split()[1] for x in local.stdout.splitlines() if x.startswith("run "))
    assert mlflow.get_run(local_id).data.metrics["test/f1"] == kids[2].data.metrics["test/f1"]


def test_ctrl_c_checkpoints_every_ray_seed_and_the_command_resumes(
    cluster, repo, tmp_path, team_server, monkeypatch
):
    """Into the team's server (PostgreSQL, basic auth), as README's walk-through does."""
    address, home = cluster
    for key, value in team_server["env"].items():  # (the commands below inherit them)
        monkeypatch.setenv(key, value)
    _with_remote(repo, tmp_path / "remote")
    git(repo, "commit", "-q", "--allow-empty", "-m", "another commit: its own node repo")
    args = ["xp", "repeat", "digits", "train.epochs=40", "eval.every=50", "eval.patience=null",
            "train.checkpoint_every=100", "--seeds", "2", "--jobs", "2", "--executor", "ray",
            "--ray-address", address]  # fmt: skip
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.Popen(args, cwd=repo, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_signals)  # fmt: skip
    parent_id = parent_id_in(proc.stdout.readline())
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # both seeds train (their logs on the node say so)
        logs = list(home.glob(f"*/.xp/ray-logs/{parent_id}-seed-*.log"))
        if len(logs) == 2 and all("progress " in log.read_text() for log in logs):
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, errors = proc.communicate(timeout=240)
    assert proc.returncode == 130, out + errors
    from xp.record.track import children_of

    kids = children_of(parent_id)
    assert len(kids) == 2 and {k.info.status for k in kids} == {"KILLED"}, out + errors
    again = run(args, repo)  # the same command: both resume from their checkpoints
    assert "resuming" in again.stdout
    after = children_of(parent_id)
    assert {k.info.run_id for k in after} == {k.info.run_id for k in kids}
    assert {k.info.status for k in after} == {"FINISHED"}
    for k in after:  # resumed, not restarted: every step once
        assert k.data.tags["xp.resumed_at_step"] != "0"
        steps = [m.step for m in mlflow.MlflowClient().get_metric_history(
            k.info.run_id, "train/loss")]  # fmt: skip
        assert sorted(steps) == list(range(1, 401))
    # readable in the team's UI: the repeat and its seeds say what differs, and which seed
    assert mlflow.get_run(parent_id).info.run_name == "digits epochs=40 every=50 patience=null x2"
    assert sorted(k.info.run_name for k in after) == [
        f"digits epochs=40 every=50 patience=null s{s}" for s in (1, 2)
    ]


def test_a_cluster_mistake_is_one_line_and_records_nothing(cluster, repo, tmp_path):
    address, _ = cluster
    closed = f"127.0.0.1:{free_port()}"
    git(repo, "commit", "-q", "--allow-empty", "-m", "a commit no node has data for")
    cases = [
        ((), closed, "no Ray cluster answers there"),
        (("--cpus-per-seed", "64"), address, "has 2 CPU and 0 GPU in all"),
        (("--gpus-per-seed", "0.5"), address, "a seed asks for 1 CPU and 0.5 GPU"),
        ((), address, "nor a DVC remote (none is configured)"),
    ]
    for extra, where, says in cases:
        proc = _repeat(repo, where, "--seeds", "2", *extra, check=False)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, proc.stdout + proc.stderr
        assert lines[0].startswith("error: ") and says in lines[0], lines[0]
    _with_remote(repo, tmp_path / "empty-remote", push=False)  # a remote without the objects
    proc = _repeat(repo, address, "--seeds", "2", check=False)
    assert proc.returncode == 2 and "nor the default DVC remote (team)" in proc.stderr, proc.stderr
    assert mlflow.search_runs(search_all_experiments=True).empty  # no run, RUNNING or other
