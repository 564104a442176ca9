"""`xp compare`'s narrow read (xp.record.narrow) against MLflow's `search_runs` on a SQLite store:
the same runs in the same order and the same table, on randomised stores; a store whose schema it
does not know falls back with one warning; it never writes. PostgreSQL and `xp server`:
tests/e2e/test_compare_narrow.py."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from pathlib import Path

import mlflow
import pytest

from tests.narrow_store import FILTERS, assert_same, build_store, compare_both


@pytest.fixture(scope="module", params=[1, 2])
def store(request, tmp_path_factory):
    """A randomised SQLite store (two seeds), built once per module."""
    path = tmp_path_factory.mktemp(f"narrow{request.param}") / "mlflow.db"
    uri = f"sqlite:///{path}"
    names = build_store(mlflow.MlflowClient(tracking_uri=uri), request.param)
    return {"uri": uri, "path": path, "names": names}


@pytest.mark.parametrize("filt", FILTERS)
def test_the_narrow_read_gives_search_runs_table_to_the_last_digit(store, filt, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    for project in (None, "digits"):
        for experiment in (None, store["names"][0]):
            a, b, said = compare_both(project, experiment, filt)
            assert said == []  # (the narrow path was taken: nothing to fall back from)
            assert_same(a, b)


@pytest.mark.parametrize("filt", [None, FILTERS[2], FILTERS[4]])
def test_many_runs_read_by_experiment_give_the_same_table(store, filt, monkeypatch):
    from xp.record import narrow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    monkeypatch.setattr(narrow, "FEW_RUNS", 0)  # (as for a store of thousands of runs)
    for experiment in (None, store["names"][0]):
        a, b, _ = compare_both("digits", experiment, filt)
        assert_same(a, b)


def test_the_narrow_read_is_taken_and_reads_only_what_it_ranks(store, monkeypatch):
    from xp.compare import fetch_runs
    from xp.record.narrow import LiteRun

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    before = hashlib.md5(store["path"].read_bytes()).hexdigest()
    runs = fetch_runs("digits", None, None, "test/f1")
    assert runs and all(isinstance(r, LiteRun) for r in runs)
    assert not any("train/loss" in r.data.metrics for r in runs)  # (not asked for)
    assert "optim.lr" in runs[0].data.params  # (the rest of a run's params, read when asked)
    assert hashlib.md5(store["path"].read_bytes()).hexdigest() == before  # nothing written


def test_a_store_it_does_not_know_falls_back_with_one_warning(store, tmp_path, monkeypatch):
    from xp.compare import fetch_runs
    from xp.record import narrow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    monkeypatch.setattr(narrow, "_models", lambda: (_ for _ in ()).throw(
        narrow.Unsupported("this MLflow's SQL store is not laid out as xp knows it")))  # fmt: skip
    said: list[str] = []
    a = fetch_runs("digits", None, None, "test/f1", said.append)
    assert len(said) == 1 and "not laid out" in said[0] and "search_runs" in said[0]
    monkeypatch.undo()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    b = fetch_runs("digits", None, None, "test/f1", said.append)
    assert [r.info.run_id for r in a] == [r.info.run_id for r in b] and len(said) == 1


def test_a_schema_revision_it_does_not_know_is_detected(store, tmp_path):
    import sqlalchemy as sa

    from xp.record import narrow

    copy = tmp_path / "other.db"
    shutil.copy(store["path"], copy)
    with sqlite3.connect(copy) as con:
        con.execute("UPDATE alembic_version SET version_num = 'a1b2c3d4e5f6'")
    engine = sa.create_engine(f"sqlite:///{copy}")
    with engine.connect() as conn, pytest.raises(narrow.Unsupported, match="a1b2c3d4e5f6"):
        narrow.read_sql(conn, None, None, narrow.Want(tags=("xp.kind",)))
    with sqlite3.connect(copy) as con:
        con.execute("DROP TABLE alembic_version")
    with engine.connect() as conn, pytest.raises(narrow.Unsupported, match="alembic_version"):
        narrow.read_sql(conn, None, None, narrow.Want(tags=("xp.kind",)))


def test_a_malformed_filter_is_mlflows_error_on_both_paths(store, monkeypatch):
    from mlflow.exceptions import MlflowException

    from xp.compare import fetch_runs

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    said = []
    for metric in ("test/f1", None):
        with pytest.raises(MlflowException) as e:
            fetch_runs(None, None, "params.lr ~ 3", metric)
        said.append(str(e.value).splitlines()[0])
    assert said[0] == said[1]


def test_a_missing_store_file_is_not_created_by_the_narrow_read(tmp_path, monkeypatch):
    from xp.record import narrow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'none.db'}")
    assert narrow.fetch(None, None, narrow.Want()) is None
    assert not Path(tmp_path / "none.db").exists()
