"""Warm workers: processes that train seed after seed, each seed exactly as its own `xp train`
process would, without paying for a new interpreter per seed.

A new process per seed pays ~7 s of CPU before it trains (importing torch, MLflow, DVC, GitPython,
torch._dynamo, and a first record's caches; more than a digits seed's training). A fork server
(`fork_server`, one per distinct start environment) pays it once and forks a worker per request:
a fork costs milliseconds and shares those pages. Each seed runs the `xp train` command line in
its worker: its own MLflow run, its own checkpoints, its own run lock, its output in its own log
file (file descriptors 1 and 2 are pointed at it, so C libraries' output goes there too). Between
seeds the worker puts back what a seed may change: environment variables, working directory,
`sys.path`, torch's thread count, deterministic and oneDNN flags, an MLflow run left active. RNGs
need no reset: the trainer seeds every generator it uses from the run's seeds before it draws.
Metrics go to a writer process forked from the worker as it starts (`use_writer("fork")`): it
has the worker's imports, so no second interpreter starts, and it shares no GIL with the
training loop (a writer thread cost digits' loop ~20%).

What stays per process is fixed when the server starts: the numerics profile (kernels are chosen
when torch is imported) and the environment of the jobs it takes (`Executor` starts a server per
distinct environment). The server opens no store, no GPU and no thread before it forks.

Protocol of a worker (its socket to the executor, one JSON object per line), so that a cluster
executor can drive the same loop elsewhere (`serve` over any pair of text streams):

    parent -> worker   {"seed": 3, "args": ["digits", "seed=3", ...], "log": "/path/seed-3.log",
                        "env": {...}}
    worker -> parent   {"ready": <pid>}               once
                       {"seed": 3, "code": 0}          when the seed's `xp train` has returned

A seed that kills the process (a segfault, `XP_FAULT_KILL`, an OOM kill) takes down its worker
only; the server reports the worker's exit code (-9), the executor marks that seed with it and
forks a new worker. A seed stopped by SIGINT/SIGTERM (exit 130/143) ends KILLED and the worker
exits after reporting it: a stop is for every seed. If the executor dies without a word, the
server passes SIGTERM to its workers (each checkpoints and ends KILLED); if the server dies, its
workers see it and stop the same way.

    python -m xp.execute.worker <fd>      (started by `LocalExecutor`; not a user command)
"""

from __future__ import annotations

import json
import os
import socket
import sys
import traceback
from typing import IO, Any

from xp.record.supervise import PARENT_ENV, leave, watch_parent

STOP_CODES = (130, 143)  # a seed stopped by Ctrl-C or SIGTERM: the worker stops too


def _warm_imports() -> None:
    """What every seed would import: paid once here."""
    import mlflow  # noqa: F401
    import sklearn.metrics  # noqa: F401
    import torch  # noqa: F401

    import xp.train.loop  # noqa: F401


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
        self.mkldnn = torch.backends.mkldnn.enabled  # the portable profile turns it off

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
        torch.backends.mkldnn.enabled = self.mkldnn


def run_seed(job: dict[str, Any]) -> int:
    """One seed's `xp train`, its output in its log file; returns its exit code."""
    from xp.train.command import run_args
    from xp.train.console import guard_output_streams, quiet_libraries

    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    fd = os.open(job["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ.update(job.get("env") or {})
    try:
        guard_output_streams()  # as the `xp` command does before any verb
        quiet_libraries()
        return run_args(job["args"])
    except SystemExit as e:  # a verb that exits directly
        return e.code if isinstance(e.code, int) else 1
    except KeyboardInterrupt:  # Ctrl-C outside the run's own handling, as `xp train` exits
        return 130
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

    from xp.record.metric_writer import use_writer, writer_kind

    _warm_imports()
    if writer_kind() is None:  # (a forked worker forks its writer; elsewhere, e.g. in an actor
        use_writer("thread")  # that runs threads already, no second interpreter per worker)
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


def _warm_caches() -> None:
    """What a seed's first run in a process pays besides imports (~2 s of CPU): paid once, before
    any worker is forked. Nothing here may open a store or a GPU, or start a thread: a forked
    child must not share a connection, a CUDA context or a lock with its siblings."""
    import alembic.command  # noqa: F401  (the store's schema check, per seed)
    import dvc.repo  # noqa: F401  (data versions)
    import dvc.repo.index  # noqa: F401
    import git  # noqa: F401  (the commit and the diff)
    import mlflow.pyfunc  # noqa: F401  (the record: the model and its signature)
    import mlflow.pytorch  # noqa: F401
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401  (the store, opened per seed)
    import scmrepo.git  # noqa: F401  (DVC's view of git)
    import torch._dynamo  # noqa: F401  (torch's optimizers import it on first use, ~1 s)
    import torch._inductor.config  # noqa: F401  (use_deterministic_algorithms sets it)

    import xp.train.command  # noqa: F401  (each seed is an `xp train` command line)
    from xp.record import provenance

    provenance.pip_freeze()  # cached per process
    try:  # (a text project's model and tokenizer; the LR schedule is xp's own, no import)
        import transformers  # noqa: F401
    except ImportError:
        pass


def _worker(channel: socket.socket, server: int) -> int:
    """A forked worker: the seed loop over `channel`, watched by the fork server `server`."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the server's forwarding is not ours
    signal.signal(signal.SIGINT, signal.default_int_handler)  # the server ignores Ctrl-C; we stop
    from xp.record.metric_writer import start_writer, use_writer

    use_writer("fork")  # now, while this process has one thread and no store connection
    start_writer(close_in_child=(channel.fileno(),))
    os.environ[PARENT_ENV] = str(server)
    watch_parent()  # if the server dies by SIGKILL, this worker stops, its seed checkpointed
    os.environ.pop(PARENT_ENV, None)  # watched once, here; not again by every seed
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # fd 1 is a seed's log file while it trains, nothing between
    os.close(devnull)
    jobs, control = channel.makefile("r"), channel.makefile("w")
    try:
        return serve(jobs, control)
    except KeyboardInterrupt:  # stopped while waiting for a job
        return 130


def fork_server(requests: socket.socket) -> int:
    """Import and warm up once, then fork a worker for each request on `requests` (a
    SOCK_SEQPACKET socket to the executor) until it closes.

    A new interpreter per worker pays ~7 s of CPU (imports and first-run caches) on the cores
    the seeds need; a fork costs milliseconds and shares those pages. Messages, one JSON object
    per packet:

        executor -> server   {"env": {...}} with the worker's end of a socket pair (SCM_RIGHTS)
        executor -> server   {"close": true}: no more workers (the socket closing without it
                             means the executor died)
        server -> executor   {"ready": <pid>} once; {"forked": <pid>} for each request;
                             {"exit": <pid>, "code": <exit code, -N for signal N>} when a worker
                             has ended

    The server ends when told to or when the executor dies (then it passes SIGTERM on, so every
    seed checkpoints), after its workers have ended.
    """
    import signal
    import time

    from xp.record.supervise import STOP_GRACE_SECONDS

    executor = os.getppid()
    children: set[int] = set()

    def say(message: dict[str, Any]) -> None:
        try:
            requests.send(json.dumps(message).encode())
        except OSError:  # the executor is gone: nobody to tell
            pass

    def reap() -> None:
        for pid in list(children):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                children.discard(pid)
                say({"exit": pid, "code": os.waitstatus_to_exitcode(status)})

    def stop_children(*_: Any) -> None:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop_children)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is for the seeds, sent to each
    _warm_imports()
    _warm_caches()
    say({"ready": os.getpid()})
    requests.settimeout(0.1)
    closed = False  # told so: the executor goes on without us (else it died)
    while os.getppid() == executor:
        reap()
        try:
            data, fds, _, _ = socket.recv_fds(requests, 65536, 1)
        except TimeoutError:
            continue
        request = json.loads(data) if data else {}
        if not data or request.get("close"):
            closed = bool(data)
            break
        pid = os.fork()
        if pid == 0:  # the worker
            requests.close()
            os.environ.update(request.get("env") or {})
            code = 1
            try:
                code = _worker(socket.socket(fileno=fds[0]), os.getppid())
            except BaseException:
                traceback.print_exc()
            finally:
                leave(code)
        for fd in fds:
            os.close(fd)
        children.add(pid)
        say({"forked": pid})
    if not closed:  # the executor died without a word: every seed stops at a checkpoint
        stop_children()
    deadline = time.monotonic() + STOP_GRACE_SECONDS + 2
    while children and time.monotonic() < deadline:
        reap()
        time.sleep(0.05)
    return 0


def main() -> int:
    """`python -m xp.execute.worker <fd>`: the fork server, on the socket the executor passed
    as `fd`."""
    import signal

    # a process started from a thread that blocks signals inherits the mask (a Ray actor's
    # threads block SIGINT): unblocked, or Ctrl-C would never reach a seed
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    return fork_server(socket.socket(fileno=int(sys.argv[1])))


if __name__ == "__main__":
    leave(main())  # without the teardown of torch and MLflow: the seeds beside it need the CPU
