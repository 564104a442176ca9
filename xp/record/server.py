"""A team's tracking server: MLflow's own server, PostgreSQL behind it, artifacts served through
it, MLflow's basic-auth app in front. `xp server` (and `make server`) runs

    mlflow server --backend-store-uri postgresql://... --artifacts-destination <dir>
                  --serve-artifacts --app-name xp --host <host> --port <port>

after creating the database if it is missing and writing what the auth app needs into a state
folder (`.xp/server/` by default, mode 0700): its config (users in `basic_auth.db` there), the
Flask secret key that signs its CSRF tokens, and the admin's password (`MLFLOW_AUTH_ADMIN_PASSWORD`
if set, else generated once and kept in `admin_password`, mode 0600). Clients use
`MLFLOW_TRACKING_URI=http://<host>:<port>` with `MLFLOW_TRACKING_USERNAME`/`_PASSWORD`.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from xp import XpError
from xp.record.store import db_reason, redact

DEFAULT_BACKEND = "postgresql://postgres@127.0.0.1:5432/xp"  # the local PostgreSQL, database xp
DEFAULT_STATE = Path(".xp/server")
ADMIN = "admin"
READY_TIMEOUT_S = 180


class ServerError(XpError):
    """A server that cannot be started: no database, a port taken, a broken config."""


@dataclass
class ServerSpec:
    """Where a server keeps runs and artifacts, where it listens, and its auth state."""

    backend: str = DEFAULT_BACKEND
    artifacts: Path = DEFAULT_STATE / "artifacts"
    state: Path = DEFAULT_STATE
    host: str = "127.0.0.1"
    port: int = 5000
    workers: int | None = None  # uvicorn's processes (MLflow's default when None)
    auth: bool = True

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def ensure_database(uri: str) -> bool:
    """Create the PostgreSQL database of `uri` if it does not exist; True if it was created.

    Raises:
        ServerError: the database server cannot be reached (one line, password left out).
    """
    import sqlalchemy
    from sqlalchemy.engine import make_url

    url = make_url(uri)
    if not url.get_backend_name() == "postgresql" or not url.database:
        return False
    admin = url.set(database="postgres")
    try:
        engine = sqlalchemy.create_engine(
            admin, isolation_level="AUTOCOMMIT", poolclass=sqlalchemy.NullPool,
            connect_args={"connect_timeout": 10},
        )  # fmt: skip
        with engine.connect() as con:
            found = con.execute(sqlalchemy.text("SELECT 1 FROM pg_database WHERE datname = :n"),
                                {"n": url.database}).first()  # fmt: skip
            if found:
                return False
            quoted = engine.dialect.identifier_preparer.quote(url.database)
            con.execute(sqlalchemy.text(f"CREATE DATABASE {quoted}"))
            return True
    except sqlalchemy.exc.SQLAlchemyError as e:
        raise ServerError(f"cannot create the database of {redact(uri)}: {db_reason(e)}") from None


def _secret(path: Path, make: str | None = None) -> str:
    """A secret kept in `path` (mode 0600), made on first use."""
    if path.exists():
        return path.read_text().strip()
    value = make or secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


def auth_env(state: Path) -> dict[str, str]:
    """The environment MLflow's basic-auth app needs, its files in `state` (made if missing)."""
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    ini = state / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\n"
        "# a user with no permission on an experiment may read it, not write it\n"
        "default_permission = READ\n"
        "# a password's hash is checked once a minute per worker, not on every request (~0.1 s of\n"
        "# CPU each); a changed password reaches the other workers within that minute\n"
        "auth_cache_ttl_seconds = 60\n"
        f"database_uri = sqlite:///{(state / 'basic_auth.db').resolve()}\n"
        f"admin_username = {ADMIN}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    password = os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD") or _secret(state / "admin_password")
    return {
        "MLFLOW_AUTH_CONFIG_PATH": str(ini.resolve()),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": _secret(state / "secret_key"),
        "MLFLOW_AUTH_ADMIN_PASSWORD": password,
    }


def command(spec: ServerSpec) -> list[str]:
    """MLflow's own `mlflow server` command line for `spec`."""
    argv = [sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", spec.backend,
            "--artifacts-destination", str(Path(spec.artifacts).resolve()), "--serve-artifacts",
            "--host", spec.host, "--port", str(spec.port)]  # fmt: skip
    if spec.workers:
        argv += ["--workers", str(spec.workers)]
    # MLflow's basic-auth app (or none) with xp's read-only routes (xp.record.server_app)
    return argv + ["--app-name", "xp" if spec.auth else "xp-open"]


def start(spec: ServerSpec, log: Path) -> subprocess.Popen:
    """Start a server for `spec` (its output in `log`) and wait until it answers.

    Raises:
        ServerError: the database cannot be created, or the server exits or does not answer
            within READY_TIMEOUT_S (the last line of its log says why).
    """
    ensure_database(spec.backend)
    env = {**os.environ, **(auth_env(spec.state) if spec.auth else {})}
    Path(spec.artifacts).mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(command(spec), stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)  # fmt: skip
    wait_ready(spec.url, proc, log)
    return proc


def wait_ready(url: str, proc: subprocess.Popen, log: Path) -> None:
    """Poll `url/health` until the server answers; fail with its log's last line if it exits."""
    import requests

    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"the tracking server exited ({proc.returncode}): {_last_line(log)}")
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    stop(proc)
    raise ServerError(f"the tracking server did not answer at {url} within {READY_TIMEOUT_S} s: "
                      f"{_last_line(log)}")  # fmt: skip


def describe(spec: ServerSpec, log: Path) -> list[str]:
    """What a user needs to know of a started server: where it is, and how clients log in."""
    lines = [f"MLflow tracking server at {spec.url} (runs in {redact(spec.backend)}, artifacts "
             f"in {spec.artifacts}; log {log})"]  # fmt: skip
    if spec.auth:
        where = ("MLFLOW_AUTH_ADMIN_PASSWORD" if os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD")
                 else spec.state / "admin_password")  # fmt: skip
        lines.append(f"basic auth: user {ADMIN}, password in {where}; clients set "
                     f"MLFLOW_TRACKING_URI={spec.url} MLFLOW_TRACKING_USERNAME and "
                     "MLFLOW_TRACKING_PASSWORD")  # fmt: skip
    return lines


def wait(proc: subprocess.Popen) -> int:
    """Wait for a server started by `start`; Ctrl-C or SIGTERM stop it (and its workers) and
    give 130. Returns its exit code otherwise."""
    from xp.record.supervise import terminate_as_interrupt

    try:
        with terminate_as_interrupt():
            return proc.wait()
    except KeyboardInterrupt:
        stop(proc)
        return 130


def stop(proc: subprocess.Popen, grace: float = 15) -> None:
    """Stop a server started by `start` (its whole process group: uvicorn's workers too)."""
    import signal

    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def _last_line(log: Path) -> str:
    try:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no log)"
    return lines[-1].strip()[:300] if lines else "(empty log)"
