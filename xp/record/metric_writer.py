"""The metric writer: a child process that puts a run's writes into the tracking store, in order:
the metrics buffered by the tracker, and every other write of the run (`xp.record.ops`: tags,
params, texts, inputs, artifacts, the model, the end), so that a training process never opens
the store itself.

A child process (`python -m xp.record.metric_writer`, spoken to in JSON lines on stdin/stdout),
the same loop in a child forked from a warm worker (no second interpreter to start), or a thread;
`start_writer` starts the kind `use_writer` chose.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterable
from typing import IO, Any

from xp import XpError
from xp.record.store_lock import BUSY_TIMEOUT_MS, install_sqlite_pragmas  # noqa: F401  (theirs)


class WriterError(XpError):
    """The writer could not write, or died."""


class CallError(WriterError):
    """The writer could not do what it was asked (`call`): `kind` names the error the caller
    raises (`TrackingError`, `StoreError`, or what MLflow raised)."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


class _Writer:
    """What the tracker hands metric batches to: `put` them, `wait` until they are written.

    Both kinds run the same loop (`_write`) and answer a flush once everything sent before it is
    in the store, in order.
    """

    _token = 0

    def alive(self) -> bool: ...

    def _send(self, message: dict[str, Any]) -> None: ...

    def _answer(self) -> str | None:
        """The writer's next answer line; None if it died."""
        ...

    def close(self) -> None: ...

    def put(self, uri: str, run_id: str, batch: list[tuple[str, float, int, int]]) -> None:
        self._send({"uri": uri, "run": run_id, "metrics": batch})

    def op(self, uri: str, run_id: str | None, op: str, args: dict[str, Any]) -> None:
        """Queue one of the run's writes (`xp.record.ops`) behind what was sent before it; a
        failure is said at the next `wait` or `call`."""
        self._send({"uri": uri, "run": run_id, "op": op, "args": args})

    def call(self, uri: str, run_id: str | None, op: str, args: dict[str, Any],
             meanwhile: Callable[[], None] | None = None) -> Any:  # fmt: skip
        """Do one of the run's writes or reads (`xp.record.ops`) once everything sent before it
        is done, and return its answer. `meanwhile`: work of the caller's, done while it waits.

        Raises:
            CallError: it could not be done (its one line, and the kind of error).
            WriterError: an earlier write failed, or the writer died.
        """
        import json

        self._token += 1
        token = self._token
        self._send({"uri": uri, "run": run_id, "op": op, "args": args, "call": token})
        if meanwhile is not None:
            meanwhile()
        kind, body = self._answer_to(token, ("reply", "fail"))
        if kind == "fail":
            said = json.loads(body)
            raise CallError(said["message"], said["kind"])
        return json.loads(body)

    def wait(self) -> None:
        """Block until everything sent so far is in the store.

        Raises:
            WriterError: the writer failed to write or died.
        """
        self._token += 1
        self._send({"flush": self._token})
        self._answer_to(self._token, ("ack",))

    def _answer_to(self, token: int, kinds: tuple[str, ...]) -> tuple[str, str]:
        """The writer's answer (one of `kinds`) to message `token`: (kind, what follows it).

        Raises:
            WriterError: the writer said that a write failed, or died.
        """
        while True:
            line = self._answer()
            if line is None:
                raise WriterError("the metric writer died; what it was given was lost")
            kind, _, value = line.partition(" ")
            if kind == "error":
                raise WriterError(f"could not write to the store: {value}")
            number, _, body = value.partition(" ")
            if kind in kinds and int(number) == token:
                return kind, body


class _ProcessWriter(_Writer):
    """A child process (`python -m xp.record.metric_writer`) that writes metric batches to the
    store.

    A thread would share the training process's GIL: at ~80 us of Python per metric in MLflow's
    SQL store, three metrics a step cost a small model several percent of its speed. A process
    costs the loop one pipe write per batch. It speaks JSON lines on stdin/stdout (no
    multiprocessing, so callers need no `__main__` guard). `start_writer` starts it early so its
    imports (~2.5 s of CPU) overlap the trainer's setup.
    """

    def __init__(self, warm: tuple[str, ...] = ()) -> None:
        """`warm`: modules it imports once the run is open, ahead of the writes that need them
        (a training run's model: torch)."""
        import subprocess
        import sys

        self._proc = subprocess.Popen(
            [sys.executable, "-m", "xp.record.metric_writer", *warm],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            start_new_session=True,  # Ctrl-C is the trainer's to handle, not the writer's
        )
        self._stdin, self._stdout = self._proc.stdin, self._proc.stdout

    def alive(self) -> bool:
        return self._proc.poll() is None

    def _send(self, message: dict[str, Any]) -> None:
        import json

        try:
            self._stdin.write(json.dumps(message) + "\n")
            if "flush" in message or "call" in message:
                self._stdin.flush()
        except (BrokenPipeError, ValueError):
            raise WriterError("the metric writer process died; metrics were lost") from None

    def _answer(self) -> str | None:
        line = self._stdout.readline()
        return line.rstrip("\n") if line else None

    def close(self) -> None:
        if self.alive():
            self._proc.stdin.close()  # end of input: the writer finishes and exits
            self._proc.wait(timeout=60)


class _ForkedWriter(_ProcessWriter):
    """The writer process forked from this one: a warm worker's, which has every import the
    loop needs already (a spawned writer pays ~2.5 s of CPU for them, per worker).

    Forked while the process still has one thread and no store connection (a forked child must
    not inherit a lock held by another thread, or share a connection): `use_writer("fork")` then
    `start_writer()` first thing in the worker. A writer that dies later is replaced by a
    spawned one (forking a process that runs threads is not safe).
    """

    def __init__(self, close_in_child: tuple[int, ...] = ()) -> None:
        to_child, from_parent = os.pipe()
        to_parent, from_child = os.pipe()
        pid = os.fork()
        if pid == 0:  # the writer
            code = 1
            try:
                os.setsid()  # Ctrl-C is the trainer's to handle (`_serve_writer` ignores it)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                os.dup2(to_child, 0)
                os.dup2(from_child, 1)
                for fd in (to_child, from_parent, to_parent, from_child, *close_in_child):
                    os.close(fd)  # only the worker's ends keep the pipes open: EOF if it dies
                _serve_writer(os.fdopen(0, "r"), os.fdopen(1, "w"))
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                os._exit(code)
        os.close(to_child)
        os.close(from_child)
        self._pid, self._code = pid, None
        self._stdin = os.fdopen(from_parent, "w", buffering=1)
        self._stdout = os.fdopen(to_parent, "r")

    def alive(self) -> bool:
        if self._code is None:
            done, status = os.waitpid(self._pid, os.WNOHANG)
            if done:
                self._code = os.waitstatus_to_exitcode(status)
        return self._code is None

    def close(self) -> None:
        import time

        if self.alive():
            self._stdin.close()  # end of input: the writer finishes and exits
            deadline = time.monotonic() + 60
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.01)


class _ThreadWriter(_Writer):
    """The same loop on a thread of this process: no second interpreter to start.

    For a process that trains seed after seed (a warm worker) or logs little (a repeat's
    parent), a writer process's imports and exit (~3 s of CPU, on cores the seeds need) cost
    more than sharing the GIL with the training loop (~80 us a metric).
    """

    def __init__(self) -> None:
        import queue
        import threading

        self._inbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._answers: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="xp-metric-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            _write(iter(self._inbox.get, None), self._answers.put)
        finally:
            self._answers.put(None)  # a waiter learns that nothing more will come

    def alive(self) -> bool:
        return self._thread.is_alive()

    def _send(self, message: dict[str, Any]) -> None:
        if not self.alive():
            raise WriterError("the metric writer thread died; metrics were lost")
        self._inbox.put(message)

    def _answer(self) -> str | None:
        return self._answers.get()

    def close(self) -> None:
        if self.alive():
            self._inbox.put(None)  # end of input: the loop finishes what it has
            self._thread.join(timeout=60)


WRITER_KINDS = ("process", "fork", "thread")
# what a training run's writer imports once the run is open: what it needs to log the model
TRAINING_MODULES = ("torch", "mlflow.pyfunc")
_KIND: str | None = None  # None: a process for a training loop, a thread for anything else
_WRITER: _Writer | None = None
_FORKED = False  # a writer was forked: a replacement is spawned (the process has threads now)


_INHERITED: list[_Writer] = []  # a fork's copies of its parent's writer: never used, never closed


def forget_inherited() -> None:
    """In a process just forked from one that had a writer: that writer is the parent's (its
    pipes, its exit handler); this process starts its own."""
    global _WRITER, _FORKED, _KIND
    if _WRITER is not None:
        import atexit

        atexit.unregister(_WRITER.close)
        _INHERITED.append(_WRITER)
        _WRITER = None
    _FORKED, _KIND = False, None


def use_writer(kind: str) -> None:
    """Fix the kind of writer this process starts, whatever it runs: `fork` in a forked warm
    worker (then `start_writer()` at once, before any thread), `thread` where neither a new
    interpreter nor a fork pays (a Ray actor's loop)."""
    global _KIND
    if kind not in WRITER_KINDS:
        raise ValueError(f"metric writer {kind!r}: use one of {', '.join(WRITER_KINDS)}")
    _KIND = kind


def writer_kind() -> str | None:
    """The kind `use_writer` fixed, if any."""
    return _KIND


def start_writer(training: bool = False, close_in_child: tuple[int, ...] = ()) -> _Writer:
    """The process's metric writer, started on first use: unless `use_writer` fixed the kind, a
    process for a training loop (call early: it imports MLflow while the model loads), a thread
    for a process that logs a summary (a repeat's parent). `close_in_child`: descriptors a
    forked writer must not hold open (a worker's socket to its executor)."""
    global _WRITER, _FORKED
    if _WRITER is None or not _WRITER.alive():
        import atexit

        kind = _KIND or ("process" if training else "thread")
        if kind == "fork" and _FORKED:
            kind = "process"
        if kind == "fork":
            _WRITER, _FORKED = _ForkedWriter(close_in_child), True
        else:
            _WRITER = _ProcessWriter(TRAINING_MODULES if training else ()) if kind == "process" \
                else _ThreadWriter()  # fmt: skip
        atexit.register(_WRITER.close)
    return _WRITER


def drain() -> None:
    """Wait until this process's writer has written what it was handed (if it has one)."""
    if _WRITER is not None and _WRITER.alive():
        try:
            _WRITER.wait()
        except WriterError:
            pass  # (said where the run waits for it)


def _write(messages: Iterable[dict[str, Any]], answer: Callable[[str], None],
           warm: tuple[str, ...] = ()) -> None:  # fmt: skip
    """The writer's loop: write each batch and do each op (`xp.record.ops`), in order; answer each
    flush with `ack <token>` once everything before it is written, each call with `reply <token>
    <json>` or `fail <token> <json>`, and a write that failed with `error ...` (said at the next
    flush or call). `warm`: modules imported once the run is open."""
    import importlib

    import mlflow
    from mlflow.entities import Metric

    clients: dict[str, Any] = {}
    warm_store(os.environ.get("MLFLOW_TRACKING_URI"))  # while the trainer sets up
    for message in messages:
        if "flush" in message:
            answer(f"ack {message['flush']}")
            continue
        uri = message["uri"]
        if uri.startswith("sqlite:///"):
            install_sqlite_pragmas()
        if "op" in message:
            _perform(message, answer)
            if message["op"] == "start":
                for name in warm:  # (after the run exists: the trainer waited for that)
                    importlib.import_module(name)
                warm = ()
            continue
        if uri not in clients:
            clients[uri] = mlflow.MlflowClient(uri)
        batch = message["metrics"]
        try:
            for i in range(0, len(batch), 1000):
                chunk = [Metric(k, v, ts, step) for k, v, ts, step in batch[i : i + 1000]]
                clients[uri].log_batch(message["run"], metrics=chunk)
        except Exception as e:  # say so at the next flush; later batches may still get through
            answer(f"error {type(e).__name__}: {str(e).splitlines()[0]}")


def _perform(message: dict[str, Any], answer: Callable[[str], None]) -> None:
    """One op of `xp.record.ops`; its answer if it was a call."""
    import json

    from xp.record.ops import perform

    call = message.get("call")
    try:
        result = perform(message["op"], message["uri"], message.get("run"), message["args"])
    except Exception as e:
        said = str(e) if isinstance(e, XpError) else f"{type(e).__name__}: {str(e).strip()}"
        said = said.splitlines()[0] if said.strip() else type(e).__name__
        if call is None:
            answer(f"error {said}")
        else:
            kind = getattr(e, "kind", None) or type(e).__name__
            answer(f"fail {call} {json.dumps({'kind': kind, 'message': said})}")
        return
    if call is not None:
        answer(f"reply {call} {json.dumps(result)}")


def warm_store(uri: str | None) -> None:
    """Open the store of `uri` in this process ahead of its first write (a SQLite store's engine
    and schema check take ~1 s), where its tables exist already: a new store is
    `configure_store`'s to create, and a command creating one holds the creation lock this waits
    for. Any error is left to the first write, which says it properly."""
    if not uri:
        return
    try:
        from xp.record.store_lock import creation_lock, tables_made

        with creation_lock(uri):
            if not tables_made(uri):
                return
        if uri.startswith("sqlite:///"):
            install_sqlite_pragmas()
        import mlflow

        mlflow.MlflowClient(uri).search_experiments(max_results=1)
    except Exception:
        pass


def _serve_writer(inbox: IO[str], outbox: IO[str], warm: tuple[str, ...] = ()) -> None:
    """The writer process: JSON lines in, answers out; leaves without the interpreter's
    teardown (~1 s) once its input ends, everything written."""
    import json

    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def answer(line: str) -> None:
        outbox.write(line + "\n")
        outbox.flush()

    import queue
    import threading

    lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()

    def pump() -> None:  # the pipe is read as fast as it is written: a sender never blocks on it
        for line in inbox:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, name="xp-writer-inbox", daemon=True).start()
    _write((json.loads(line) for line in iter(lines.get, None)), answer, warm)
    outbox.flush()
    os._exit(0)


if __name__ == "__main__":
    import sys

    _serve_writer(sys.stdin, sys.stdout, tuple(sys.argv[1:]))
