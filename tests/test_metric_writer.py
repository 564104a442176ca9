"""The metric writer: a process beside a training loop (spawned, or forked from a warm worker),
a thread in a repeat's parent. Every kind writes every batch in order and says, at the next
flush, when one could not be."""

import os
import signal
import socket

import mlflow
import pytest

from xp.record import metric_writer
from xp.record.metric_writer import (
    WriterError,
    _ForkedWriter,
    _ProcessWriter,
    _ThreadWriter,
    start_writer,
    use_writer,
)


@pytest.mark.parametrize("kind", [_ProcessWriter, _ForkedWriter, _ThreadWriter])
def test_both_kinds_write_in_order_and_say_when_they_cannot(tmp_path, kind):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow.MlflowClient(uri)
    run = client.create_run(client.create_experiment("writer")).info.run_id
    writer = kind()
    try:
        for first in range(0, 1500, 500):  # batches of 500 points, 1000 a log_batch
            points = [("train/loss", 1 / (s + 1), 0, s) for s in range(first, first + 500)]
            writer.put(uri, run, points)
        writer.wait()
        hist = client.get_metric_history(run, "train/loss")
        assert sorted(m.step for m in hist) == list(range(1500))
        assert {m.step: m.value for m in hist}[9] == pytest.approx(0.1)
        writer.put(uri, "no-such-run", [("train/loss", 1.0, 0, 0)])
        with pytest.raises(WriterError, match="could not write to the store"):
            writer.wait()
        writer.put(uri, run, [("train/loss", 0.5, 0, 1500)])  # the writer goes on after an error
        writer.wait()
        assert len(client.get_metric_history(run, "train/loss")) == 1501
    finally:
        writer.close()
    assert not writer.alive()


def test_a_training_loop_gets_a_process_unless_the_worker_fixed_another_kind(monkeypatch):
    monkeypatch.setattr(metric_writer, "_KIND", None)
    monkeypatch.setattr(metric_writer, "_FORKED", False)
    kinds = []
    for training, fixed in ((False, None), (True, None), (True, "thread"), (True, "fork")):
        monkeypatch.setattr(metric_writer, "_WRITER", None)
        if fixed:
            use_writer(fixed)
        writer = start_writer(training=training)
        kinds.append(type(writer))
        if fixed == "fork":  # a forked writer that dies is replaced by a spawned one: by now
            os.kill(writer._pid, signal.SIGKILL)  # the worker runs threads, forking is unsafe
            while writer.alive():
                pass
            replacement = start_writer(training=True)
            kinds.append(type(replacement))
            replacement.close()
        writer.close()
    assert kinds == [_ThreadWriter, _ProcessWriter, _ThreadWriter, _ForkedWriter, _ProcessWriter]
    with pytest.raises(ValueError, match="use one of process, fork, thread"):
        use_writer("fast")


def test_a_forked_writer_holds_open_only_its_own_pipes():
    # the worker's socket to its executor must close when the worker dies, writer or not
    worker_end, executor_end = socket.socketpair()
    writer = _ForkedWriter(close_in_child=(worker_end.fileno(),))
    try:
        worker_end.close()
        executor_end.settimeout(10)
        assert executor_end.recv(1) == b""  # EOF: nobody else holds the worker's end
        writer.wait()  # and the writer still answers
    finally:
        writer.close()
        executor_end.close()
    assert not writer.alive()
