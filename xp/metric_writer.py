"""The metric writer: a child process that puts buffered metrics into the tracking store.

Run as `python -m xp.metric_writer` by `start_writer`; spoken to in JSON lines on stdin/stdout.
"""

from __future__ import annotations

import sqlite3
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


class _MetricWriter:
    """A child process (`python -m xp.metric_writer`) that writes metric batches to the store.

    A thread would share the training process's GIL: at ~80 us of Python per metric in MLflow's
    SQL store, three metrics a step cost a small model several percent of its speed. A process
    costs the loop one pipe write per batch. It speaks JSON lines on stdin/stdout (no
    multiprocessing, so callers need no `__main__` guard), writes batches in order, and answers
    a flush once everything sent before it is in the store. One writer serves every run of the
    process; `start_writer` starts it early so its imports overlap the trainer's setup.
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
        self._token = 0

    def alive(self) -> bool:
        return self._proc.poll() is None

    def _send(self, message: dict[str, Any]) -> None:
        import json

        try:
            self._proc.stdin.write(json.dumps(message) + "\n")
        except (BrokenPipeError, ValueError):
            raise WriterError("the metric writer process died; metrics were lost") from None

    def put(self, uri: str, run_id: str, batch: list[tuple[str, float, int, int]]) -> None:
        self._send({"uri": uri, "run": run_id, "metrics": batch})

    def wait(self) -> None:
        """Block until everything sent so far is in the store.

        Raises:
            TrackingError: the writer failed to write or died.
        """
        self._token += 1
        self._send({"flush": self._token})
        self._proc.stdin.flush()
        while True:
            line = self._proc.stdout.readline()
            if not line:
                raise WriterError("the metric writer process died; metrics were lost")
            kind, _, value = line.rstrip("\n").partition(" ")
            if kind == "error":
                raise WriterError(f"could not write metrics to the store: {value}")
            if kind == "ack" and int(value) == self._token:
                return

    def close(self) -> None:
        if self.alive():
            self._proc.stdin.close()  # end of input: the writer finishes and exits
            self._proc.wait(timeout=60)


_WRITER: _MetricWriter | None = None


def start_writer() -> _MetricWriter:
    """The process's metric writer, started on first use (call early: it imports MLflow)."""
    global _WRITER
    if _WRITER is None or not _WRITER.alive():
        import atexit

        _WRITER = _MetricWriter()
        atexit.register(_WRITER.close)
    return _WRITER


def _serve_writer() -> None:
    """The writer process: read JSON lines from stdin, write metrics, acknowledge flushes."""
    import json
    import signal
    import sys

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import mlflow
    from mlflow.entities import Metric

    clients: dict[str, Any] = {}
    for line in sys.stdin:
        message = json.loads(line)
        if "flush" in message:
            print(f"ack {message['flush']}", flush=True)
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
            print(f"error {type(e).__name__}: {str(e).splitlines()[0]}", flush=True)


if __name__ == "__main__":
    _serve_writer()
