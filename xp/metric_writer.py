"""The metric writer: a child process that puts buffered metrics into the tracking store.

A child process (`python -m xp.metric_writer`, spoken to in JSON lines on stdin/stdout) or, in
processes that start no second interpreter, a thread; `start_writer` starts the kind `use_writer`
chose.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from typing import Any

from xp import XpError

BUSY_TIMEOUT_MS = 60_000  # several seeds write at once; wait for the lock instead of failing


class WriterError(XpError):
    """The writer could not write, or died."""


_PRAGMAS_INSTALLED = False


def install_sqlite_pragmas() -> None:
    global _PRAGMAS_INSTALLED
    if _PRAGMAS_INSTALLED:
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    @event.listens_for(Engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        if isinstance(dbapi_conn, sqlite3.Connection):
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cur.close()

    _PRAGMAS_INSTALLED = True


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

    def wait(self) -> None:
        """Block until everything sent so far is in the store.

        Raises:
            WriterError: the writer failed to write or died.
        """
        self._token += 1
        self._send({"flush": self._token})
        while True:
            line = self._answer()
            if line is None:
                raise WriterError("the metric writer died; metrics were lost")
            kind, _, value = line.partition(" ")
            if kind == "error":
                raise WriterError(f"could not write metrics to the store: {value}")
            if kind == "ack" and int(value) == self._token:
                return


class _ProcessWriter(_Writer):
    """A child process (`python -m xp.metric_writer`) that writes metric batches to the store.

    A thread would share the training process's GIL: at ~80 us of Python per metric in MLflow's
    SQL store, three metrics a step cost a small model several percent of its speed. A process
    costs the loop one pipe write per batch. It speaks JSON lines on stdin/stdout (no
    multiprocessing, so callers need no `__main__` guard). `start_writer` starts it early so its
    imports (~2.5 s of CPU) overlap the trainer's setup.
    """

    def __init__(self) -> None:
        import subprocess
        import sys

        self._proc = subprocess.Popen(
            [sys.executable, "-m", "xp.metric_writer"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            start_new_session=True,  # Ctrl-C is the trainer's to handle, not the writer's
        )

    def alive(self) -> bool:
        return self._proc.poll() is None

    def _send(self, message: dict[str, Any]) -> None:
        import json

        try:
            self._proc.stdin.write(json.dumps(message) + "\n")
            if "flush" in message:
                self._proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            raise WriterError("the metric writer process died; metrics were lost") from None

    def _answer(self) -> str | None:
        line = self._proc.stdout.readline()
        return line.rstrip("\n") if line else None

    def close(self) -> None:
        if self.alive():
            self._proc.stdin.close()  # end of input: the writer finishes and exits
            self._proc.wait(timeout=60)


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


WRITER_KINDS = ("process", "thread")
_KIND: str | None = None  # None: a process for a training loop, a thread for anything else
_WRITER: _Writer | None = None


def use_writer(kind: str) -> None:
    """Fix the kind of writer this process starts, whatever it runs: `thread` in a warm worker
    (one interpreter for every seed it trains)."""
    global _KIND
    if kind not in WRITER_KINDS:
        raise ValueError(f"metric writer {kind!r}: use one of {', '.join(WRITER_KINDS)}")
    _KIND = kind


def start_writer(training: bool = False) -> _Writer:
    """The process's metric writer, started on first use: unless `use_writer` fixed the kind, a
    process for a training loop (call early: it imports MLflow while the model loads), a thread
    for a process that logs a summary (a repeat's parent)."""
    global _WRITER
    if _WRITER is None or not _WRITER.alive():
        import atexit

        kind = _KIND or ("process" if training else "thread")
        _WRITER = _ProcessWriter() if kind == "process" else _ThreadWriter()
        atexit.register(_WRITER.close)
    return _WRITER


def _write(messages: Iterable[dict[str, Any]], answer: Callable[[str], None]) -> None:
    """The writer's loop: write each batch, in order; answer each flush with `ack <token>` once
    everything before it is written, or with `error ...` if a batch could not be."""
    import mlflow
    from mlflow.entities import Metric

    clients: dict[str, Any] = {}
    for message in messages:
        if "flush" in message:
            answer(f"ack {message['flush']}")
            continue
        uri = message["uri"]
        if uri not in clients:
            if uri.startswith("sqlite:///"):
                install_sqlite_pragmas()
            clients[uri] = mlflow.MlflowClient(uri)
        batch = message["metrics"]
        try:
            for i in range(0, len(batch), 1000):
                chunk = [Metric(k, v, ts, step) for k, v, ts, step in batch[i : i + 1000]]
                clients[uri].log_batch(message["run"], metrics=chunk)
        except Exception as e:  # say so at the next flush; later batches may still get through
            answer(f"error {type(e).__name__}: {str(e).splitlines()[0]}")


def _serve_writer() -> None:
    """The writer process: JSON lines on stdin, answers on stdout; leaves without the
    interpreter's teardown (~1 s) once its input ends, everything written."""
    import json
    import os
    import signal
    import sys

    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def answer(line: str) -> None:
        print(line, flush=True)

    _write((json.loads(line) for line in sys.stdin), answer)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    _serve_writer()
