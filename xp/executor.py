"""Where seeds run. `LocalExecutor` runs each seed as its own `xp train` process, N at a time.

The interface is small on purpose (`run(jobs, on_event) -> exit codes`): a cluster executor
(Slurm, Kubernetes) only has to start the same command somewhere and report when it ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from xp.supervise import PARENT_ENV


@dataclass
class SeedJob:
    """One seed to train: the `xp train` arguments and the environment it needs."""

    seed: int
    args: list[str]  # after `xp train`
    env: dict[str, str] = field(default_factory=dict)
    log: Path | None = None  # where its output goes


# on_event(seed, kind, info): kind is "started", "progress" ({"step", "total"}), "line", "done"
OnEvent = Callable[[int, str, dict], None]


class Executor(Protocol):
    def run(self, jobs: list[SeedJob], on_event: OnEvent) -> dict[int, int]:
        """Run every job; returns seed -> exit code."""
        ...


class LocalExecutor:
    """Seeds as separate processes here: a crash or a NaN in one never takes down the rest.

    A seed writes its output to its own log file, never to a pipe of ours, so the parent dying
    cannot break a seed's output; the parent tails the files for progress. Each seed watches
    its parent (`XP_PARENT_PID`) and stops itself, checkpointed, if the parent dies by SIGKILL.
    """

    def __init__(self, jobs: int = 1, cwd: Path | None = None):
        self.jobs = max(1, jobs)
        self.cwd = cwd
        self._procs: dict[int, subprocess.Popen] = {}

    def threads_per_job(self) -> int:
        """CPU threads each seed may use so that N seeds at once share the cores, not fight."""
        return max(1, (os.cpu_count() or 1) // self.jobs)

    def run(self, jobs: list[SeedJob], on_event: OnEvent) -> dict[int, int]:
        pending = list(jobs)
        codes: dict[int, int] = {}
        tails: dict[int, _Tail] = {}
        try:
            while pending or self._procs:
                while pending and len(self._procs) < self.jobs:
                    job = pending.pop(0)
                    _prepare_log(job)
                    tails[job.seed] = _Tail(job, on_event)  # from where this attempt writes
                    self._procs[job.seed] = proc = self._start(job)
                    on_event(job.seed, "started", {"pid": proc.pid})
                for seed, proc in list(self._procs.items()):
                    tails[seed].read()
                    if proc.poll() is not None:
                        tails[seed].read()
                        codes[seed] = proc.returncode
                        del self._procs[seed]
                        on_event(seed, "done", {"code": proc.returncode})
                time.sleep(0.1)
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM raised as `supervise.Terminated`
            self._stop_all()
            raise
        return codes

    def _start(self, job: SeedJob) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_RUN_ID"}  # not the parent's
        env.update(job.env)
        env["XP_PROGRESS"] = "lines"
        env[PARENT_ENV] = str(os.getpid())
        with open(job.log, "a") as log:  # the child keeps its own descriptor
            return subprocess.Popen(
                [sys.executable, "-m", "xp.cli", "train", *job.args], cwd=self.cwd, env=env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # a terminal Ctrl-C reaches us only; we forward it once
            )  # fmt: skip

    def _stop_all(self) -> None:
        """Every seed saves its checkpoint and ends KILLED (resumable), then we return."""
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self._procs.values():
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()


def _prepare_log(job: SeedJob) -> None:
    """Give the job a log file (a temporary one if it has none) whose folder exists."""
    if job.log is None:
        job.log = Path(tempfile.mkstemp(prefix=f"xp-seed-{job.seed}-", suffix=".log")[1])
    job.log.parent.mkdir(parents=True, exist_ok=True)


class _Tail:
    """Follows a seed's log file and turns its progress lines into events."""

    def __init__(self, job: SeedJob, on_event: OnEvent):
        self.job, self.on_event = job, on_event
        self._offset = job.log.stat().st_size if job.log and job.log.exists() else 0
        self._partial = ""

    def read(self) -> None:
        try:
            with open(self.job.log, encoding="utf-8", errors="replace") as f:
                f.seek(self._offset)
                chunk = f.read()
                self._offset = f.tell()
        except OSError:
            return
        lines = (self._partial + chunk).split("\n")
        self._partial = lines.pop()
        for line in lines:
            if line.startswith("progress "):
                step, total = line.split()[1].split("/")
                self.on_event(self.job.seed, "progress", {"step": int(step), "total": int(total)})
            else:
                self.on_event(self.job.seed, "line", {"line": line})
