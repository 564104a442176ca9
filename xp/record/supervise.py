"""Supervision of training processes: who is alive, who stops whom, and how a test kills them.

- A run lock: the process that trains a run holds an exclusive `flock` on
  `.xp/runs/<run id>/.lock` for its whole life, so "RUNNING in the store" and "a live process
  trains it" can be told apart (a kill -9 releases the lock with the process).
- SIGTERM is Ctrl-C: a scheduler's preemption (Slurm, Kubernetes) stops a repeat the clean way.
- A seed watches its parent: if the parent dies without a word (SIGKILL), the seed stops itself
  as if told to (checkpoint, KILLED) and is gone within seconds.
- Fault injection for tests and users: `XP_FAULT_KILL=eval@15` kills the trainer with SIGKILL
  at that point, to show that a kill -9 anywhere loses nothing.

Nothing here imports torch or MLflow.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from xp.record.workspace import Workspace

PARENT_ENV = "XP_PARENT_PID"  # set by the executor on each seed it starts
FAULT_ENV = "XP_FAULT_KILL"
FAULT_SEEDS_ENV = "XP_FAULT_KILL_SEEDS"  # only these seeds (master seeds, comma-separated)
FAULT_STOP_ENV = "XP_FAULT_STOP"  # as XP_FAULT_KILL, but SIGTERM: a preemption at a known point
PARENT_POLL_SECONDS = 0.5
STOP_GRACE_SECONDS = 8.0  # after the parent died: time to checkpoint before a hard exit


def leave(code: object) -> NoReturn:
    """Exit with `code` (as `sys.exit` reads it) without the interpreter's teardown.

    Finalizing a process that imported torch and MLflow takes ~1.8 s of CPU after the last
    atexit handler (measured on `xp train digits`), time a user waits for and seeds training
    beside it lose. What a normal exit does that matters is done first, in the interpreter's own
    order: threading's exit hooks (thread pools shut down) and the join of every thread that is
    not a daemon (`threading._shutdown`, what `Py_FinalizeEx` calls first), then the atexit
    handlers (the metric writer writes what it holds, logging flushes), then stdout and stderr
    are flushed. Files are closed by the code that writes them.
    """
    import atexit

    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        shutdown()
    else:  # pragma: no cover (a Python without it: join what is not a daemon)
        for thread in threading.enumerate():
            if thread is not threading.main_thread() and not thread.daemon:
                thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more can be said
            pass
    if code is None or isinstance(code, int):
        os._exit(code or 0)
    print(code, file=sys.stderr, flush=True)  # sys.exit("message") prints it and exits 1
    os._exit(1)


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled exactly like Ctrl-C (a KeyboardInterrupt) but with exit code 143."""


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises `Terminated` in the main thread, as SIGINT raises
    KeyboardInterrupt: every `except KeyboardInterrupt` cleanup runs for both.

    SIGINT raises KeyboardInterrupt here whatever the process inherited: a command started from a
    background job (`make test &`, `nohup`, some CI runners) inherits SIGINT ignored, and would
    otherwise go on past a Ctrl-C its own user sent (`xp train` does the same in its loop).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, _frame: Any) -> None:
        raise Terminated

    old = signal.signal(signal.SIGTERM, _raise)
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
        signal.signal(signal.SIGINT, old_int)


# -- run locks ----------------------------------------------------------------------------------
def lock_path(workspace: Workspace | Path, run_id: str) -> Path:
    return Workspace.of(workspace).run_lock(run_id)


class RunLock:
    """An exclusive lock on a run, held by the process that trains it (released by any exit)."""

    def __init__(self, path: Path, fd: int):
        self.path = path
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = -1


@contextmanager
def closed_on_error(tracker: Any, lock: RunLock | None) -> Iterator[None]:
    """A training run's body: Ctrl-C (a second one) ends it KILLED, an error FAILED (`failed`),
    and its run lock is let go however it ends."""
    try:
        yield
    except KeyboardInterrupt:  # a second Ctrl-C: stop now, keep what was logged
        tracker.end("KILLED")
        raise
    except BaseException:
        tracker.set_tags({"xp.outcome": "failed"})
        tracker.end("FAILED")
        raise
    finally:
        if lock is not None:
            lock.release()


def try_lock(workspace: Workspace | Path, run_id: str) -> RunLock | None:
    """Take the run's lock, or None when a live process holds it."""
    import fcntl

    path = lock_path(workspace, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    os.set_inheritable(fd, False)  # a child (the metric writer) must not keep it alive
    return RunLock(path, fd)


def holder(workspace: Workspace | Path, run_id: str) -> int | None:
    """The pid of the live process training this run here, or None."""
    lock = try_lock(workspace, run_id)
    if lock is not None:
        lock.release()
        return None
    try:
        return int(lock_path(workspace, run_id).read_text() or 0) or -1
    except (OSError, ValueError):
        return -1


def wait_released(workspace: Workspace, run_ids: list[str], timeout: float) -> list[str]:
    """Wait until no live process trains these runs; returns the ids still held at the end."""
    deadline = time.monotonic() + timeout
    held = [r for r in run_ids if holder(workspace, r) is not None]
    while held and time.monotonic() < deadline:
        time.sleep(0.25)
        held = [r for r in held if holder(workspace, r) is not None]
    return held


# -- the seed side: watch the parent --------------------------------------------------------------
def watch_parent() -> None:
    """If started by an executor (`XP_PARENT_PID`), stop this process when that parent is gone.

    The parent may die by SIGKILL (no chance to tell anyone): the seed sees its parent pid change,
    sends itself SIGTERM (the trainer checkpoints and ends the run KILLED), and exits hard after
    `STOP_GRACE_SECONDS` if it is still alive, so no seed outlives its parent by more than 10 s.
    """
    expected = os.environ.get(PARENT_ENV)
    if not expected:
        return

    def _watch() -> None:
        while os.getppid() == int(expected):
            time.sleep(PARENT_POLL_SECONDS)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(STOP_GRACE_SECONDS)
        os._exit(143)  # a checkpoint save is atomic; the run stays RUNNING and is resumed later

    threading.Thread(target=_watch, name="xp-watch-parent", daemon=True).start()


# -- fault injection ------------------------------------------------------------------------------
_current_seed: int | None = None


def training_seed(seed: int | None) -> None:
    """The master seed this process trains now (`XP_FAULT_KILL_SEEDS` picks seeds by it)."""
    global _current_seed
    _current_seed = seed


def _planned_fault(env: str = FAULT_ENV) -> tuple[str, int | None] | None:
    spec = os.environ.get(env, "")
    if not spec:
        return None
    only = os.environ.get(FAULT_SEEDS_ENV, "")
    if only and str(_current_seed) not in only.split(","):
        return None
    point, _, step = spec.partition("@")
    return point, int(step) if step else None


def fault_point(point: str, step: int | None = None) -> None:
    """SIGKILL this process here if `XP_FAULT_KILL` names this point (and step).

    Points: `setup` (run created, nothing trained), `step@N` (after optimizer step N, its metrics
    buffered), `eval@N` (during the evaluation at step N), `checkpoint@N` (while the checkpoint
    of step N is saved), `log_model` (while the final model is being logged), `audit` (the data
    audit made, not yet cached), `monitor_event@N` (a monitor event of step N journaled, not yet
    recorded). With
    `XP_FAULT_KILL_SEEDS=2,5`, only those seeds of a repeat are killed. `XP_FAULT_STOP` names a
    point the same way and sends SIGTERM instead (a scheduler's preemption, caught there).
    """
    for env, sig in ((FAULT_ENV, signal.SIGKILL), (FAULT_STOP_ENV, signal.SIGTERM)):
        planned = _planned_fault(env)
        if planned is None or planned[0] != point:
            continue
        if planned[1] is not None and planned[1] != step:
            continue
        if sig == signal.SIGKILL:  # what was handed to the writer is in the store by then: the
            from xp.record.metric_writer import drain  # store at the point is the same each time

            drain()
        os.kill(os.getpid(), sig)
