import inspect
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from xp.record.store import configure_store
from xp.record.track import MlflowTracker, NullTracker, TrackingError, start_tracker


def _public(cls):
    return {
        n: inspect.signature(f)
        for n, f in inspect.getmembers(cls, inspect.isfunction)
        if not n.startswith("_")
    }


def test_null_tracker_has_the_same_methods_and_signatures():
    assert _public(NullTracker) == _public(MlflowTracker)


def test_buffered_metrics_all_reach_the_store_in_step_order(tmp_path):
    tracker = start_tracker(True, "unit", tmp_path)
    for step in range(1, 2501):  # crosses the 1000-metric batch boundary twice
        tracker.log_metrics({"train/loss": 1.0 / step, "train/lr": 0.1}, step)
    tracker.flush()
    hist = tracker.metric_history("train/loss")
    assert [s for s, _ in hist] == list(range(1, 2501))
    assert hist[9][1] == pytest.approx(0.1)
    tracker.end("FINISHED")
    assert mlflow.get_run(tracker.run_id).info.status == "FINISHED"


def test_a_run_whose_last_metrics_cannot_be_written_does_not_end_finished(tmp_path):
    from xp.record.metric_writer import WriterError

    tracker = start_tracker(True, "unit", tmp_path)
    tracker.log_metrics({"train/loss": 1.0}, 1)

    def lost(*_a):
        raise WriterError("the store refused the batch")

    tracker.flush = lost
    with pytest.raises(WriterError):
        tracker.end("FINISHED")
    assert mlflow.get_run(tracker.run_id).info.status == "FAILED"


def test_params_already_logged_by_mlflow_run_are_kept(tmp_path):
    tracker = start_tracker(True, "unit", tmp_path)
    mlflow.MlflowClient().log_param(tracker.run_id, "optim.lr", "3e-4")  # as `-P` logs it
    tracker.log_params({"optim.lr": "0.0003", "train.epochs": "2"})
    tracker.flush()  # (the writer writes them, in order; a flush waits for it)
    params = mlflow.get_run(tracker.run_id).data.params
    assert params == {"optim.lr": "3e-4", "train.epochs": "2"}
    tracker.end("FINISHED")


def test_sqlite_store_runs_in_wal_mode(tmp_path):
    uri = configure_store(tmp_path)
    db = uri.removeprefix("sqlite:///")
    mlflow.MlflowClient().search_experiments()
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_store_in_a_folder_that_cannot_be_written_is_one_line(tmp_path, monkeypatch):
    """Its lock file beside it is made after the store's own checks, and fails as one line too
    (/sys refuses new files even to root)."""
    from xp.record.store import StoreError

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////sys/x.db")
    with pytest.raises(StoreError, match="cannot open the tracking store sqlite:////sys/x.db") as e:
        configure_store(tmp_path)
    assert "\n" not in str(e.value) and not Path("/sys/x.db-xp-lock").exists()


def test_default_store_is_at_the_repo_root(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert configure_store(tmp_path) == f"sqlite:///{tmp_path / 'mlflow.db'}"


WRITER = """
import sys
from pathlib import Path
from xp.record.track import start_tracker
t = start_tracker(True, "concurrent", Path(sys.argv[1]))
t.log_input("train", str(Path(sys.argv[1]) / "train.csv"), "0123abcd", "train")  # one dataset row
for step in range(300):
    t.log_metrics({"m": step}, step)
    if step % 50 == 0:
        t.set_tags({f"tag{step}": "x"})
        t.flush()
t.end("FINISHED")
print(t.run_id)
"""


def test_several_processes_log_at_once(tmp_path):
    (tmp_path / "train.csv").write_text("x\n1\n")
    configure_store(tmp_path)
    mlflow.MlflowClient().search_experiments()  # create the schema once, as the repeat-runner does
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=os.environ.copy())
        for _ in range(4)
    ]  # fmt: skip
    run_ids = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        run_ids.append(out.strip().splitlines()[-1])
    client = mlflow.MlflowClient()
    for run_id in run_ids:
        assert len(client.get_metric_history(run_id, "m")) == 300
        (inp,) = client.get_run(run_id).inputs.dataset_inputs  # all seeds share one dataset
        assert inp.dataset.digest == "0123abcd"


def test_resuming_an_unknown_run_is_a_clear_error(tmp_path):
    with pytest.raises(TrackingError, match="unknown run id 'nope'"):
        start_tracker(True, "unit", tmp_path, resume_run_id="nope")


def test_null_tracker_records_nothing(tmp_path):
    t = start_tracker(False, "unit", tmp_path)
    t.log_metrics({"a": 1.0}, 1)
    t.end("FINISHED")
    assert not Path(tmp_path / "mlflow.db").exists()


def test_a_dataset_inserted_by_another_seed_a_moment_ago_is_retried(tmp_path, monkeypatch):
    from xp.record import metric_writer

    monkeypatch.setattr(metric_writer, "_WRITER", None)  # a writer thread of this process's,
    monkeypatch.setattr(metric_writer, "_KIND", "thread")  # which sees the patched client
    (tmp_path / "train.csv").write_text("x\n1\n")
    tracker = start_tracker(True, "unit", tmp_path)
    real, calls = mlflow.MlflowClient.log_inputs, []

    def racing(*args, **kwargs):  # what the second of two seeds starting together sees
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.name")
        return real(*args, **kwargs)

    monkeypatch.setattr(mlflow.MlflowClient, "log_inputs", racing)
    tracker.log_input("train", str(tmp_path / "train.csv"), "0123abcd", "train")
    tracker.end("FINISHED")
    assert len(calls) == 2
    assert mlflow.get_run(tracker.run_id).inputs.dataset_inputs[0].dataset.digest == "0123abcd"
