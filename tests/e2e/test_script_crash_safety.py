"""kill -9 of a script project's repeat: the parent dies without a word while its seeds' scripts
train; no process outlives it (neither a seed's `xp train` nor the script it forked), every seed
is left resumable, and the same command resumes each from its script's last checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import mlflow
import pytest

from tests.conftest import BIN, default_signals, parent_id_in, run
from xp.record.track import children_of

pytestmark = pytest.mark.e2e

ARGS = ["xp", "repeat", "digits_loop", "epochs=120", "--seeds", "2", "--jobs", "2"]


def _descendants(pid: int) -> set[int]:
    """Every live process under `pid` (Linux's /proc children lists)."""
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                continue
            for k in kids:
                if k not in found:
                    found.add(k)
                    todo.append(k)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie waiting for its reaper is gone for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _checkpointed(parent_id: str) -> bool:
    """Both seeds' scripts have saved a checkpoint (their runs carry `xp.checkpoint`)."""
    kids = children_of(parent_id)
    return len(kids) == 2 and all(k.data.tags.get("xp.checkpoint") for k in kids)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux's /proc")
def test_kill_9_of_a_script_repeats_parent_orphans_nothing_and_resumes(repo):
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    proc = subprocess.Popen(ARGS, cwd=repo, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_signals)  # fmt: skip
    parent_id = parent_id_in(proc.stdout.readline())
    deadline = time.time() + 180
    while time.time() < deadline and not _checkpointed(parent_id):
        time.sleep(0.5)
    assert _checkpointed(parent_id), "both scripts train and checkpoint"
    under = _descendants(proc.pid)
    assert len(under) >= 4  # (workers, the seeds' forks of xp, the scripts, writers)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    killed_at = time.monotonic()
    while any(_alive(p) for p in under) and time.monotonic() - killed_at < 30:
        time.sleep(0.1)
    assert not [p for p in under if _alive(p)], "no orphan"

    kids = children_of(parent_id)
    assert {k.info.status for k in kids} <= {"KILLED", "RUNNING"}  # resumable, not failed
    assert not any(k.data.tags.get("xp.outcome") for k in kids)
    done = run(ARGS, repo)
    assert parent_id_in(done.stdout) == parent_id and "resuming" in done.stdout
    kids = children_of(parent_id)
    assert len(kids) == 2 and {k.info.status for k in kids} == {"FINISHED"}
    client = mlflow.MlflowClient()
    for k in kids:  # resumed from the script's checkpoint, not restarted: every step once
        steps = [m.step for m in client.get_metric_history(k.info.run_id, "train/loss")]
        assert len(steps) == len(set(steps)) == 120 * 10
    assert mlflow.get_run(parent_id).data.tags["xp.failed_seeds"] == ""
