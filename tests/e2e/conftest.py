"""Fixtures of the end-to-end tests that need a team's tracking server: a fresh PostgreSQL
database and `xp server` (MLflow's server, basic auth, artifacts served) on a free port.

Needs a PostgreSQL server at 127.0.0.1:5432 (trust auth, as on the development and CI machines;
`XP_TEST_POSTGRES` names another). Without one these tests skip, except with `CI=true`, where they
fail: CI must exercise PostgreSQL for real.
"""

from __future__ import annotations

import os
import socket
import uuid

import pytest

POSTGRES = os.environ.get("XP_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
PASSWORD = "team-secret-" + uuid.uuid4().hex[:12]  # grepped for in everything xp writes


def _postgres_or_skip() -> None:
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(f"{POSTGRES}/postgres", poolclass=sqlalchemy.NullPool,
                                          connect_args={"connect_timeout": 5})  # fmt: skip
        with engine.connect():
            pass
    except Exception as e:
        message = f"no PostgreSQL at {POSTGRES} ({type(e).__name__})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}: CI must run the PostgreSQL tests")
        pytest.skip(message)


def _drop(database: str) -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(f"{POSTGRES}/postgres", isolation_level="AUTOCOMMIT",
                                      poolclass=sqlalchemy.NullPool)  # fmt: skip
    with engine.connect() as con:
        con.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


@pytest.fixture
def database():
    """A fresh PostgreSQL database URI (created by whoever opens it first), dropped afterwards."""
    _postgres_or_skip()
    name = f"xp_test_{uuid.uuid4().hex[:10]}"
    yield f"{POSTGRES}/{name}"
    _drop(name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def team_server(database, tmp_path, monkeypatch):
    """`xp server` (MLflow's server, basic auth, artifacts served) on a free port."""
    from xp.record import server

    spec = server.ServerSpec(
        backend=database, artifacts=tmp_path / "served-artifacts",
        state=tmp_path / "server-state", port=free_port(), workers=2,
    )  # fmt: skip
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", PASSWORD)
    proc = server.start(spec, tmp_path / "server.log")
    env = {"MLFLOW_TRACKING_URI": spec.url, "MLFLOW_TRACKING_USERNAME": server.ADMIN,
           "MLFLOW_TRACKING_PASSWORD": PASSWORD}  # fmt: skip
    try:
        yield {"spec": spec, "env": env, "database": database}
    finally:
        server.stop(proc)
