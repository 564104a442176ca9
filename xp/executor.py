"""Where seeds run. `LocalExecutor` runs each seed as its own `xp train` process, N at a time.

The interface is small on purpose (`run(jobs, on_event) -> exit codes`): a cluster executor
(Slurm, Kubernetes) only has to start the same command somewhere and report when it ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


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
    """Seeds as separate processes here: a crash or a NaN in one never takes down the rest."""

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
        readers: dict[int, threading.Thread] = {}
        try:
            while pending or self._procs:
                while pending and len(self._procs) < self.jobs:
                    job = pending.pop(0)
                    self._procs[job.seed] = proc = self._start(job)
                    on_event(job.seed, "started", {"pid": proc.pid})
                    readers[job.seed] = threading.Thread(
                        target=_pump, args=(proc, job, on_event), daemon=True
                    )
                    readers[job.seed].start()
                for seed, proc in list(self._procs.items()):
                    if proc.poll() is not None:
                        readers[seed].join()
                        codes[seed] = proc.returncode
                        del self._procs[seed]
                        on_event(seed, "done", {"code": proc.returncode})
                time.sleep(0.1)
        except KeyboardInterrupt:
            self._stop_all()
            raise
        return codes

    def _start(self, job: SeedJob) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_RUN_ID"}  # not the parent's
        env.update(job.env)
        env["XP_PROGRESS"] = "lines"
        return subprocess.Popen(
            [sys.executable, "-m", "xp.cli", "train", *job.args],
            cwd=self.cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,  # a terminal Ctrl-C reaches us only; we forward it once
        )  # fmt: skip

    def _stop_all(self) -> None:
        """Ctrl-C: every seed saves its checkpoint and ends KILLED (resumable), then we return."""
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self._procs.values():
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()


def _pump(proc: subprocess.Popen, job: SeedJob, on_event: OnEvent) -> None:
    """Copy a seed's output to its log and turn progress lines into events."""
    log = open(job.log, "a") if job.log else None  # noqa: SIM115
    try:
        for line in proc.stdout:
            if log:
                log.write(line)
                log.flush()
            if line.startswith("progress "):
                step, total = line.split()[1].split("/")
                on_event(job.seed, "progress", {"step": int(step), "total": int(total)})
            else:
                on_event(job.seed, "line", {"line": line.rstrip("\n")})
    finally:
        if log:
            log.close()
