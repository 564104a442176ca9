"""The metric writer: a process beside a training loop, a thread in a warm worker or a repeat's
parent. Both write every batch in order and say, at the next flush, when one could not be."""

import mlflow
import pytest

from xp import metric_writer
from xp.metric_writer import WriterError, _ProcessWriter, _ThreadWriter, start_writer, use_writer


@pytest.mark.parametrize("kind", [_ProcessWriter, _ThreadWriter])
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
        with pytest.raises(WriterError, match="could not write metrics to the store"):
            writer.wait()
        writer.put(uri, run, [("train/loss", 0.5, 0, 1500)])  # the writer goes on after an error
        writer.wait()
        assert len(client.get_metric_history(run, "train/loss")) == 1501
    finally:
        writer.close()
    assert not writer.alive()


def test_a_training_loop_gets_a_process_unless_the_worker_fixed_a_thread(monkeypatch):
    monkeypatch.setattr(metric_writer, "_KIND", None)
    kinds = []
    for training, fixed in ((False, None), (True, None), (True, "thread")):
        monkeypatch.setattr(metric_writer, "_WRITER", None)
        if fixed:
            use_writer(fixed)
        writer = start_writer(training=training)
        kinds.append(type(writer))
        writer.close()
    assert kinds == [_ThreadWriter, _ProcessWriter, _ThreadWriter]
    with pytest.raises(ValueError, match="use one of process, thread"):
        use_writer("fast")
