"""The tracking store: where runs are kept, opened and checked once per process.

With no configuration, an embedded SQLite store at the repo root (`mlflow.db`, artifacts in
`mlruns/`); `MLFLOW_TRACKING_URI` is respected. A URI MLflow has no store for, or a store that
cannot be opened, is one line before any run exists.
"""

from __future__ import annotations

import os
import sqlite3
import warnings
from pathlib import Path

from xp import one_line
from xp.record.store_lock import (
    BUSY_TIMEOUT_MS,
    PROBE_TIMEOUT_S,
    StoreError,
    creation_lock,
    install_sqlite_pragmas,
)
from xp.record.workspace import Workspace


def configure_store(workspace: Workspace | Path, here: bool = True) -> str:
    """Point MLflow at the project's store and make SQLite safe for concurrent writers.

    Respects `MLFLOW_TRACKING_URI`; otherwise uses the embedded store at the repo root. For
    SQLite it turns on WAL mode (readers never block the writer) and a busy timeout on every
    connection, so several seed processes can log at once. `here=False`: a process that leaves
    the store to its writer (a training process: `xp.record.ops`) checks only what needs no
    MLflow store (the scheme, a SQLite folder, a server or database that answers); the writer
    opens it, and says in one line if it cannot.

    Returns:
        The tracking URI in use.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI") or Workspace.of(workspace).default_store
    os.environ["MLFLOW_TRACKING_URI"] = uri  # child processes (seeds, mlflow run) inherit it
    if uri in _CHECKED:
        return uri
    _check_scheme(uri)
    if uri.startswith("sqlite:///"):
        if here:
            install_sqlite_pragmas()
        _enable_wal(Path(uri.removeprefix("sqlite:///")), uri)
    _probe(uri)
    if not here:
        return uri
    with creation_lock(uri):  # two first commands at once would both create the tables
        _check_store(uri)
    _CHECKED.add(uri)
    return uri


_CHECKED: set[str] = set()  # stores opened once by this process


def _check_scheme(uri: str) -> None:
    """A URI MLflow has no store for fails here with one line, not deep inside MLflow."""
    from urllib.parse import urlparse

    scheme = urlparse(uri).scheme.split("+")[0]
    known = ("", "file", "sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks")
    if scheme not in known:
        from importlib.metadata import entry_points

        plugins = {e.name for e in entry_points(group="mlflow.tracking_store")}
        if scheme not in plugins:
            raise StoreError(
                f"MLFLOW_TRACKING_URI={uri}: MLflow has no tracking store for the scheme "
                f"'{scheme}:'; use sqlite:///<path>, postgresql://..., http(s)://<server> or a "
                "folder path"
            )


def redact(uri: str) -> str:
    """A URI without the password it may carry (`http://user:secret@host` -> `http://user@host`):
    what xp writes into messages, logs and the record."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{parts.username}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def db_reason(e: BaseException) -> str:
    """What a database driver said (SQLAlchemy's wrapper and its link left out), one line."""
    cause = getattr(e, "orig", None) or e
    return " ".join(str(cause).split()).split(" (Background on this error")[0][:300]


def forbidden(e: BaseException) -> bool:
    """MLflow's basic-auth app refused a request (HTTP 403)."""
    return getattr(e, "error_code", None) == "PERMISSION_DENIED" or "error code 403" in str(e)


def write_refused(experiment_id: str) -> str:
    """The one line for a user whose permission on an experiment does not let them write to it:
    who, where, and the permission the server resolves for them (a user may ask about
    themselves)."""
    from urllib.parse import urlsplit

    import mlflow

    uri = os.environ["MLFLOW_TRACKING_URI"]
    user = os.environ.get("MLFLOW_TRACKING_USERNAME") or urlsplit(uri).username or "you"
    name = mlflow.MlflowClient().get_experiment(experiment_id).name
    try:
        with warnings.catch_warnings():  # (it imports MLflow's server, which warns about Starlette)
            warnings.simplefilter("ignore")
            from mlflow.server.auth.client import AuthServiceClient

        found = AuthServiceClient(uri).get_user_permission(user, "experiment", experiment_id)
        permission = found.permission
    except Exception:  # an older server, or a plugin's own auth: say what is known
        permission = "no write access"
    return f"{user} may not write to experiment {name} (permission {permission})"


def _probe(uri: str) -> None:
    """Reach a server or a database before MLflow does: MLflow retries a refused connection for
    minutes (HTTP: ~4 min of backoff; SQL: ~2 min) before it says so."""
    scheme = uri.split(":", 1)[0].split("+")[0]
    if scheme in ("http", "https"):
        import requests

        try:
            requests.get(uri.rstrip("/") + "/health", timeout=PROBE_TIMEOUT_S)
        except requests.RequestException as e:
            reason = type(e).__name__
            if isinstance(e, requests.ConnectionError):
                reason = "connection refused or host unknown"
            raise StoreError(
                f"cannot reach the tracking server {redact(uri)} ({reason}); is it running "
                "(`make server`)? check MLFLOW_TRACKING_URI"
            ) from None
    elif scheme in ("postgresql", "mysql"):
        import sqlalchemy

        try:
            engine = sqlalchemy.create_engine(
                uri,
                connect_args={"connect_timeout": PROBE_TIMEOUT_S},
                poolclass=sqlalchemy.NullPool,
            )
            with engine.connect():
                pass
        except Exception as e:
            raise StoreError(
                f"cannot open the tracking store {redact(uri)}: {db_reason(e)}; check "
                "MLFLOW_TRACKING_URI (the database server must be reachable and the database "
                "exist: `createdb <name>`)"
            ) from None


def _check_store(uri: str) -> None:
    """Open the store once (creating its tables) so that a store that cannot be opened is one
    line before any run exists."""
    import mlflow

    try:
        mlflow.MlflowClient(uri).search_experiments(max_results=1)
    except Exception as e:
        if "error code 401" in str(e):
            raise StoreError(
                f"the tracking server {redact(uri)} refused the credentials (HTTP 401); set "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to a user of that server"
            ) from None
        raise StoreError(
            f"cannot open the tracking store {redact(uri)}: {one_line(e, 300)}; check "
            "MLFLOW_TRACKING_URI (the folder must exist and be writable; a server must be "
            "reachable)"
        ) from None


def _enable_wal(db: Path, uri: str) -> None:
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreError(
            f"cannot open the tracking store {uri}: cannot create {db.parent} ({e.strerror}); "
            "point MLFLOW_TRACKING_URI at a writable folder"
        ) from None
    if not os.access(db.parent, os.W_OK) or (db.exists() and not os.access(db, os.W_OK)):
        raise StoreError(
            f"cannot open the tracking store {uri}: {db if db.exists() else db.parent} is not "
            "writable; point MLFLOW_TRACKING_URI at a writable folder"
        )
    try:
        with sqlite3.connect(db, timeout=BUSY_TIMEOUT_MS / 1000) as con:
            con.execute("PRAGMA journal_mode=WAL")  # persistent: stored in the file itself
    except sqlite3.OperationalError:
        pass  # another process holds it right now; it will have set WAL already or will
