"""A warm worker: one process that imports torch, MLflow and transformers once, then trains seed
after seed, each exactly as its own `xp train` process would.

A new process per seed pays ~5 s of imports before it trains (more than a digits seed's training);
a worker pays it once. Each seed still runs the `xp train` command line, in this process: its own
MLflow run, its own checkpoints, its own run lock, its output in its own log file (file
descriptors 1 and 2 are pointed at it, so C libraries' output goes there too). Between seeds the
worker puts back what a seed may change: environment variables, working directory, `sys.path`,
torch's thread count and deterministic flags, an MLflow run left active. RNGs need no reset: the
trainer seeds every generator it uses from the run's seeds before it draws.

What stays per process is fixed when the worker starts: the numerics profile (kernels are chosen
when torch is imported) and the environment of the jobs it takes (`Executor` starts a worker per
distinct environment).

Protocol (the worker's stdin and stdout, one JSON object per line), so that a cluster executor
can drive the same loop elsewhere (`serve` over any pair of text streams):

    parent -> worker   {"seed": 3, "args": ["digits", "seed=3", ...], "log": "/path/seed-3.log",
                        "env": {...}}
    worker -> parent   {"ready": <pid>}               once, when the imports are done
                       {"seed": 3, "code": 0}          when the seed's `xp train` has returned

A seed that kills the process (a segfault, `XP_FAULT_KILL`, an OOM kill) takes down this worker
only; the executor marks that seed with the worker's exit code and starts a new worker. A seed
stopped by SIGINT/SIGTERM (exit 130/143) ends KILLED and the worker exits after reporting it: a
stop is for every seed.

    python -m xp.worker      (started by `LocalExecutor`; not a user command)
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import IO, Any

from xp.supervise import PARENT_ENV, watch_parent

STOP_CODES = (130, 143)  # a seed stopped by Ctrl-C or SIGTERM: the worker stops too


def _warm_imports() -> None:
    """What every seed would import: paid once here."""
    import mlflow  # noqa: F401
    import sklearn.metrics  # noqa: F401
    import torch  # noqa: F401

    import xp.train  # noqa: F401

    try:
        import transformers  # noqa: F401
    except ImportError:  # the digits project does without
        pass


class _Baseline:
    """The process state a seed may change, as it was before the first seed."""

    def __init__(self) -> None:
        import torch

        self.env = dict(os.environ)
        self.cwd = os.getcwd()
        self.path = list(sys.path)  # MLflow's model loading adds a model's code paths to it
        self.threads = torch.get_num_threads()
        self.deterministic = torch.are_deterministic_algorithms_enabled()
        self.cudnn = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)

    def restore(self) -> None:
        import mlflow
        import torch

        while mlflow.active_run() is not None:  # a seed that failed past its own cleanup
            mlflow.end_run("FAILED")
        os.environ.clear()
        os.environ.update(self.env)
        os.chdir(self.cwd)
        sys.path[:] = self.path
        torch.set_num_threads(self.threads)
        torch.use_deterministic_algorithms(self.deterministic)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = self.cudnn


def run_seed(job: dict[str, Any]) -> int:
    """One seed's `xp train`, its output in its log file; returns its exit code."""
    from xp import cli

    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    fd = os.open(job["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ.update(job.get("env") or {})
    try:
        return cli.main(["train", *job["args"]])
    except SystemExit as e:  # a verb that exits directly
        return e.code if isinstance(e.code, int) else 1
    except Exception:  # what a process of its own would print before exiting 1, in its log
        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def serve(jobs: IO[str], control: IO[str]) -> int:
    """Train each job read from `jobs`, answering on `control`, until `jobs` ends."""

    def say(message: dict[str, Any]) -> None:
        control.write(json.dumps(message) + "\n")
        control.flush()

    _warm_imports()
    baseline = _Baseline()
    say({"ready": os.getpid()})
    for line in jobs:
        if not line.strip():
            continue
        job = json.loads(line)
        code = run_seed(job)
        baseline.restore()
        say({"seed": job["seed"], "code": code})
        if code in STOP_CODES:
            return code
    return 0


def main() -> int:
    watch_parent()  # the worker stops (its seed checkpointed) if the executor dies by SIGKILL
    os.environ.pop(PARENT_ENV, None)  # watched once, here; not again by every seed
    control = os.fdopen(os.dup(1), "w", buffering=1)  # our stdout is the executor's pipe...
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # ...and fd 1 is a seed's log file while it trains, nothing between
    os.close(devnull)
    try:
        return serve(sys.stdin, control)
    except KeyboardInterrupt:  # stopped while waiting for a job
        return 130


if __name__ == "__main__":
    sys.exit(main())
