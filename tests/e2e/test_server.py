"""xp against a team's stores: an MLflow tracking server on a real PostgreSQL (artifacts served
through it, basic auth on), and a `postgresql://` store without a server.

Needs a PostgreSQL server at 127.0.0.1:5432 (trust auth, as on the development and CI machines;
`XP_TEST_POSTGRES` names another). Without one the tests skip, except with `CI=true`, where they
fail: CI must exercise PostgreSQL for real.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import mlflow
import numpy as np
import pytest

from tests.conftest import FAST_DIGITS, parent_id_in, run
from tests.e2e.conftest import PASSWORD, POSTGRES, free_port
from tests.e2e.test_compare_narrow import through_xp_server

pytestmark = pytest.mark.e2e


def test_the_chain_runs_against_a_team_server_on_postgresql(repo, team_server, monkeypatch):
    env, spec = team_server["env"], team_server["spec"]
    proc = run(["xp", "repeat", "digits", *FAST_DIGITS, "--seeds", "3", "--jobs", "2"], repo,
               env=env)  # fmt: skip
    group = parent_id_in(proc.stdout)
    ranking = run(["xp", "compare", "--project", "digits"], repo, env=env)
    assert "test/f1 by configuration (3 runs)" in ranking.stdout
    run(["xp", "promote", group, "--name", "digits-team", "--min-seeds", "3"], repo, env=env)

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    client = mlflow.MlflowClient()
    champion = client.get_model_version_by_alias("digits-team", "champion")
    assert champion.tags["xp.group"] == group and champion.tags["xp.n"] == "3"
    model = mlflow.pyfunc.load_model("models:/digits-team@champion")  # through the server
    with np.load(repo / "data/digits/test.npz") as z:
        said = model.predict(z["X"].astype(np.float32))["label"].astype(int) - 5  # digits 5-9
        accuracy = (said.to_numpy() == z["y"]).mean()
    seed = client.get_run(champion.tags["xp.run_id"])
    assert accuracy == pytest.approx(seed.data.metrics["test/accuracy"])
    # the artifacts live where the server keeps them, not in the client's folder
    assert any((spec.artifacts).rglob("MLmodel")) and not (repo / "mlruns").exists()

    proc = run(["xp", "reproduce", seed.info.run_id], repo, env=env)
    assert "verdict: identical" in proc.stdout

    # no credential in anything xp wrote: the database, the served artifacts, the repo's scratch
    dump = subprocess.run(["pg_dump", team_server["database"]], capture_output=True, text=True)
    if dump.returncode == 0:
        assert dump.stdout.count("digits-team") and PASSWORD not in dump.stdout
    for folder in (spec.artifacts, repo / ".xp"):
        for path in Path(folder).rglob("*"):
            if path.is_file():
                assert PASSWORD.encode() not in path.read_bytes(), path


def test_a_postgresql_store_without_a_server(repo, database, tmp_path):
    from xp.record.server import ensure_database

    assert ensure_database(database)  # (xp server creates it; a user runs `createdb`)
    env = {"MLFLOW_TRACKING_URI": database}
    proc = run(["xp", "train", "digits", *FAST_DIGITS, "seed=2"], repo, env=env)
    run_id = proc.stdout.split("ok run ")[1].split()[0]
    proc = run(["xp", "reproduce", run_id], repo, env=env)
    assert "verdict: identical" in proc.stdout


def test_an_unreachable_store_or_wrong_credentials_is_one_line_at_once(
    repo, team_server, monkeypatch
):
    url = team_server["env"]["MLFLOW_TRACKING_URI"]
    for key, value in team_server["env"].items():
        monkeypatch.setenv(key, value)
    from mlflow.server.auth.client import AuthServiceClient

    # a teammate who may read the admin's `digits` experiment but not write to it
    experiment = mlflow.MlflowClient().create_experiment("digits")
    reader = {**team_server["env"], "MLFLOW_TRACKING_USERNAME": "reader",
              "MLFLOW_TRACKING_PASSWORD": "reader-" + uuid.uuid4().hex}  # fmt: skip
    auth = AuthServiceClient(url)
    auth.create_user("reader", reader["MLFLOW_TRACKING_PASSWORD"])
    auth.grant_user_permission("reader", "experiment", experiment, "READ")
    cases = {  # environment -> what the one line says
        "read only": (reader, "error: reader may not write to experiment digits (permission READ)"),
        "server down": ({"MLFLOW_TRACKING_URI": f"http://admin:{PASSWORD}@127.0.0.1:{free_port()}"},
                        "cannot reach the tracking server http://admin@127.0.0.1:"),
        "no database": ({"MLFLOW_TRACKING_URI": f"{POSTGRES}/xp_no_such_database"},
                        'database "xp_no_such_database" does not exist'),
        "wrong password": ({**team_server["env"], "MLFLOW_TRACKING_PASSWORD": "wrong-password"},
                           f"the tracking server {url} refused the credentials (HTTP 401)"),
    }  # fmt: skip
    for case, (env, expected) in cases.items():
        proc = run(
            ["xp", "repeat", "digits", *FAST_DIGITS, "--seeds", "2"],
            repo,
            env=env,
            check=False,
            timeout=120,
        )  # fmt: skip (MLflow alone retries for minutes)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, (case, proc.stderr)
        assert lines[0].startswith("error:") and expected in lines[0], (case, lines[0])
        assert PASSWORD not in proc.stderr
    proc = run(["xp", "train", "digits", *FAST_DIGITS], repo, env=reader, check=False)
    assert proc.returncode == 2 and proc.stderr.strip() == cases["read only"][1], proc.stderr
    client = mlflow.MlflowClient()  # nothing was recorded on the server
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []
    # (on this server, which costs a start: xp compare's narrow read and its refusals)
    through_xp_server(team_server, monkeypatch)


def test_one_process_at_a_time_creates_a_new_postgresql_store(database):
    """A command and its metric writer (or several seeds) opening a new database at once: the
    writer never creates the tables, and a second opener waits for the first one's lock (CI once
    failed on `duplicate key ... alembic_version` when both created them)."""
    import sys
    import time

    import sqlalchemy

    from xp.record.metric_writer import warm_store
    from xp.record.server import ensure_database
    from xp.record.store_lock import SCHEMA_LOCK_KEY, creation_lock, tables_made

    assert ensure_database(database)
    warm_store(database)
    assert not tables_made(database)  # the writer left a new store to the command

    opener = "from xp.record.store import configure_store; configure_store('.')"
    env = {**__import__("os").environ, "MLFLOW_TRACKING_URI": database}
    engine = sqlalchemy.create_engine(database, poolclass=sqlalchemy.NullPool)
    waiting = sqlalchemy.text(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
        f"AND (classid::bigint << 32 | objid::bigint) = {SCHEMA_LOCK_KEY}"
    )
    with creation_lock(database):
        proc = subprocess.Popen([sys.executable, "-c", opener], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        with engine.connect() as con:  # held at a known point: queued behind this lock
            while not con.execute(waiting).scalar() and proc.poll() is None:
                time.sleep(0.05)
        assert proc.poll() is None and not tables_made(database)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert tables_made(database)
    engine.dispose()
