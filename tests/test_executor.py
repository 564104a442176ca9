"""Where seeds run: GPU slots, workers started ahead (seeds themselves are tested end to end in
test_repeat and tests/e2e/test_crash_safety.py)."""

import os
import signal

import pytest

from tests.conftest import MAIN
from xp.execute.executor import ExecutorError, LocalExecutor, SeedJob, gpu_slots


def test_no_gpu_no_slots_and_jobs_take_gpus_in_turn():
    assert gpu_slots(None, 0, 4) is None
    assert gpu_slots(None, 2, 3) == ["0", "1", "0"]  # more jobs than GPUs: they share
    assert gpu_slots(None, 4, 2) == ["0", "1"]


def test_a_share_puts_whole_seeds_on_each_gpu_spread_first():
    assert gpu_slots(0.25, 1, 4) == ["0"] * 4
    assert gpu_slots(0.25, 2, 8) == ["0", "1"] * 4
    assert gpu_slots(0.5, 2, 3) == ["0", "1", "0"]
    assert gpu_slots(0.3, 1, 3) == ["0"] * 3  # floor(1 / 0.3) = 3 seeds per GPU
    assert gpu_slots(1, 2, 2) == ["0", "1"]
    assert gpu_slots(2, 4, 2) == ["0,1", "2,3"]  # whole GPUs of its own


@pytest.mark.parametrize(
    ("share", "gpus", "jobs", "says"),
    [
        (0.25, 0, 1, "no GPU"),
        (1.5, 2, 1, "give an integer (1 or 2)"),
        (0.0, 1, 1, "positive"),
        (float("nan"), 1, 1, "positive"),
        (0.3, 1, 4, "hold 3 seed(s) at a time"),
        (2, 4, 3, "hold 2 seed(s) at a time"),
    ],
)
def test_a_placement_that_cannot_be_is_one_clear_error(share, gpus, jobs, says):
    with pytest.raises(ExecutorError, match=None) as e:
        gpu_slots(share, gpus, jobs)
    assert says in str(e.value) and "\n" not in str(e.value)


def _started(pids):
    return lambda seed, kind, info: pids.append(info["pid"]) if kind == "started" else None


def test_workers_are_forked_by_the_server_warm_up_started(tmp_path):
    """`warm_up` starts the fork server while the repeat sets up; `run` forks the workers from
    it: every worker is that server's child (it reaped each), 2 workers for 3 seeds. Inside
    `with`, the server outlives `run`: a search's next batch of trials, each with its own tags
    and Optuna trial, is forked from the same server; it goes when the block ends."""
    executor = LocalExecutor(2, cwd=MAIN)
    executor.warm_up(3, "native")
    (server,) = executor._servers.values()
    started: list[int] = []
    jobs = [SeedJob(s, ["--help"], log=tmp_path / f"seed-{s}.log") for s in (1, 2, 3)]
    trial = {"XP_RUN_TAGS": '{"xp.trial": "7"}', "XP_SEARCH_TRIAL": "7"}
    later = [SeedJob(s, ["--help"], env=trial, log=tmp_path / f"seed-{s}.log") for s in (4, 5)]
    with executor:
        codes = executor.run(jobs, _started(started))
        assert server.alive() and list(executor._servers.values()) == [server]
        codes |= executor.run(later, _started(started))
        assert list(executor._servers.values()) == [server]  # no second, cold server
    assert codes == dict.fromkeys((1, 2, 3, 4, 5), 0)
    assert len(set(started)) == 4 and len(started) == 5 and server.proc.pid not in started
    assert {pid: server.exits[pid] for pid in started} == dict.fromkeys(started, 0)  # its children
    assert server.proc.returncode is not None and not executor._servers  # gone with the block
    assert "Usage: xp train" in (tmp_path / "seed-5.log").read_text()


def test_a_worker_killed_with_its_seed_costs_that_seed_and_the_next_gets_a_new_one(tmp_path):
    executor = LocalExecutor(1, cwd=MAIN)
    started: list[int] = []
    jobs = [SeedJob(s, ["--help"], log=tmp_path / f"seed-{s}.log") for s in (1, 2)]
    codes = {}

    def on_event(seed, kind, info):
        if kind == "started":
            started.append(info["pid"])
            if seed == 1:
                os.kill(info["pid"], signal.SIGKILL)

    with executor:
        codes = executor.run(jobs, on_event)
    assert codes[1] == -signal.SIGKILL and codes[2] == 0
    assert len(set(started)) == 2


def test_a_worker_that_cannot_start_fails_its_seed_and_says_why_in_its_log(tmp_path):
    broken = tmp_path / "broken" / "sklearn"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('a broken install')\n")
    job = SeedJob(1, ["--help"], env={"PYTHONPATH": str(broken.parent)}, log=tmp_path / "s.log")
    with LocalExecutor(1, cwd=MAIN) as executor:
        codes = executor.run([job], lambda *a: None)
    assert codes == {1: 1}
    assert "ImportError: a broken install" in job.log.read_text()


def test_a_forked_worker_stops_on_ctrl_c_while_it_waits(tmp_path):
    """The server ignores SIGINT (a Ctrl-C is for the seeds); its forks must not inherit that."""
    import time

    from xp.execute.executor import _seed_env, _start_env

    with LocalExecutor(1, cwd=MAIN) as executor:
        worker = executor._new_worker(_start_env(_seed_env(SeedJob(0, []))), tmp_path)
        deadline = time.monotonic() + 120
        while worker._messages.empty() and time.monotonic() < deadline:  # {"ready": pid}
            time.sleep(0.05)
        os.kill(worker.pid, signal.SIGINT)
        worker.wait(10)
        assert worker.server.exits.get(worker.pid) == 130
