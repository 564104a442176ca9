"""One process at a time creates a tracking store's tables: the lock a command holds while it opens
a store, and whether a store's tables exist (what the metric writer asks before it warms one);
and the busy timeout every SQLite connection of xp's waits with.

Beside `store.py`, which opens stores, so that the metric writer (which `store.py` imports) can use
them too.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from xp import XpError

BUSY_TIMEOUT_MS = 60_000  # several seeds write at once; wait for the lock instead of failing
_PRAGMAS_INSTALLED = False


def install_sqlite_pragmas() -> None:
    """Every SQLite connection SQLAlchemy opens in this process waits `BUSY_TIMEOUT_MS` for a
    lock instead of failing at once."""
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


PROBE_TIMEOUT_S = 10  # a server or database that does not answer in this long is not there


class StoreError(XpError):
    """A tracking store that cannot be opened, or a URI scheme MLflow does not know."""


SCHEMA_LOCK_KEY = 0x78705F736368656D  # PostgreSQL advisory lock of xp's table creation ("xp_schem")


@contextlib.contextmanager
def creation_lock(uri: str) -> Iterator[None]:
    """Hold the store's creation lock while this process opens (maybe creates) its tables: two
    processes opening a new store at once (a command and its metric writer, several seeds) would
    otherwise both create them, and one fails (`duplicate key ... alembic_version`).

    SQLite: an exclusive `flock` on `<db>-xp-lock`. PostgreSQL: a session advisory lock, on a
    connection of its own. Other stores (a server creates its own tables; MySQL, MSSQL): none.
    """
    if uri.startswith("sqlite:///"):
        with _file_lock(Path(uri.removeprefix("sqlite:///")), uri):
            yield
    elif uri.split(":", 1)[0].split("+")[0] == "postgresql":
        import sqlalchemy

        engine = sqlalchemy.create_engine(
            uri, connect_args={"connect_timeout": PROBE_TIMEOUT_S}, poolclass=sqlalchemy.NullPool
        )
        with engine.connect() as con:
            con.execute(sqlalchemy.text(f"SELECT pg_advisory_lock({SCHEMA_LOCK_KEY})"))
            try:
                yield
            finally:
                con.execute(sqlalchemy.text(f"SELECT pg_advisory_unlock({SCHEMA_LOCK_KEY})"))
        engine.dispose()
    else:
        yield


def tables_made(uri: str) -> bool:
    """Whether a SQL store's tables exist already (True for any other store)."""
    if uri.startswith("sqlite:///"):
        db = uri.removeprefix("sqlite:///")
        if not os.path.isfile(db):
            return False
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as c:
            made = c.execute("SELECT 1 FROM sqlite_master WHERE name = 'alembic_version'")
            return made.fetchone() is not None
    if uri.split(":", 1)[0].split("+")[0] in ("postgresql", "mysql", "mssql"):
        import sqlalchemy

        engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.NullPool)
        try:
            return sqlalchemy.inspect(engine).has_table("alembic_version")
        finally:
            engine.dispose()
    return True


@contextlib.contextmanager
def _file_lock(db: Path, uri: str) -> Iterator[None]:
    """An exclusive lock on `<db>-xp-lock`."""
    import fcntl

    lock = db.with_name(db.name + "-xp-lock")
    try:
        f = open(lock, "a")  # (closed by the `with` below)
    except OSError as e:  # a folder root may not write to (/sys, /proc, a read-only mount)
        raise StoreError(
            f"cannot open the tracking store {uri}: cannot create {lock} "
            f"({e.strerror}); point MLFLOW_TRACKING_URI at a writable folder"
        ) from None
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
