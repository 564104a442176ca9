"""A narrow, read-only read of many runs: only the fields a caller names, straight from MLflow's
own tables (SQLAlchemy Core over MLflow's ORM models, never a write, never a table of ours), or
from `xp server`'s endpoint that does the same on the server (`xp.record.server_app`).

`xp compare` ranks 10,000 runs by four fields of each; `search_runs` builds every param, tag,
metric and dataset input of every run as ORM objects first (43 s where the read below takes
well under one). The filter is MLflow's own: parsed by `SearchUtils` and turned into SQL by the
store's own clause builder, so a `--filter` means what it means to `search_runs`. Runs come in
`search_runs`' order (start time descending, run id), as `LiteRun`s that answer the attributes
callers read (`info.run_id`, `info.run_name`, `data.tags`, `data.metrics`, `data.params`) with
what was asked for; a run's other params are read when first asked for (`prefetch_params`).

The read is only used where it is known to be exact: a SQLite or PostgreSQL store whose schema
revision is the one the installed MLflow's models describe. Anything else returns None and the
caller uses `search_runs` (an unknown schema with one warning: `Unsupported.reason`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from xp import XpError

ENDPOINT = "/ajax-api/2.0/xp/runs/narrow"  # xp server: the runs (POST, JSON)
PARAMS_ENDPOINT = "/ajax-api/2.0/xp/runs/params"  # xp server: all params of some runs
SQL_SCHEMES = ("sqlite", "postgresql")


class Unsupported(XpError):
    """The store cannot be read narrowly (an unknown schema revision, tables missing): the caller
    falls back to `search_runs` and says so once."""


@dataclass(frozen=True)
class Want:
    """What to read of each run: tags and latest metrics by key or key prefix, params by key."""

    tags: tuple[str, ...] = ()
    tag_prefixes: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    metric_prefixes: tuple[str, ...] = ()
    params: tuple[str, ...] = ()

    def as_json(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self.__dict__.items()}


class Params(Mapping):
    """A run's params: the keys asked for up front, the rest read on first use (in a batch for
    every run passed to `prefetch_params`)."""

    def __init__(self, run_id: str, known: dict[str, str], asked: tuple[str, ...],
                 loader: Callable[[list[str]], dict[str, dict[str, str]]]) -> None:  # fmt: skip
        self.run_id, self._known, self._asked, self._loader = run_id, known, asked, loader
        self._all: dict[str, str] | None = None

    def get(self, key: str, default: Any = None) -> Any:
        if self._all is None and key in self._asked:
            return self._known.get(key, default)
        return self.full().get(key, default)

    def full(self) -> dict[str, str]:
        if self._all is None:
            prefetch_params([self])
        assert self._all is not None
        return self._all

    def __getitem__(self, key: str) -> str:
        return self.full()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.full())

    def __len__(self) -> int:
        return len(self.full())


@dataclass
class LiteRun:
    """What `search_runs` returns of a run, limited to the fields asked for."""

    info: SimpleNamespace
    data: SimpleNamespace = field(repr=False)


def prefetch_params(runs: list[Any]) -> None:
    """Read every param of these runs in one query per store (a no-op for MLflow's own runs)."""
    lazy = [r if isinstance(r, Params) else getattr(r.data, "params", None) for r in runs]
    pending = [p for p in lazy if isinstance(p, Params) and p._all is None]
    by_loader: dict[int, list[Params]] = {}
    for p in pending:
        by_loader.setdefault(id(p._loader), []).append(p)
    for group in by_loader.values():
        found = group[0]._loader(sorted({p.run_id for p in group}))
        for p in group:
            p._all = found.get(p.run_id, {})


def _lite(row: list[Any], want: Want, loader: Callable) -> LiteRun:
    run_id, name, status, start, end, exp_id, tags, metrics, params = row
    info = SimpleNamespace(run_id=run_id, run_name=name, status=status, start_time=start,
                           end_time=end, experiment_id=str(exp_id))  # fmt: skip
    data = SimpleNamespace(tags=tags, metrics=metrics,
                           params=Params(run_id, params, want.params, loader))  # fmt: skip
    return LiteRun(info, data)


# ---------------------------------------------------------------------------------------------
# SQL: one query for the runs, one each for their tags, latest metrics and asked-for params


def _models() -> SimpleNamespace:
    """MLflow's table models and filter builder (Unsupported where this MLflow has moved them)."""
    try:
        from mlflow.store.tracking.dbmodels import models
        from mlflow.store.tracking.sqlalchemy_store import _get_sqlalchemy_filter_clauses
        from mlflow.utils.search_utils import SearchUtils
    except ImportError as e:
        raise Unsupported(f"this MLflow's SQL store is not laid out as xp knows it ({e})") from None

    return SimpleNamespace(Run=models.SqlRun, Tag=models.SqlTag, Param=models.SqlParam,
                           Metric=models.SqlLatestMetric, Experiment=models.SqlExperiment,
                           clauses=_get_sqlalchemy_filter_clauses,
                           parse=SearchUtils.parse_search_filter)  # fmt: skip


def check_schema(conn: Any) -> None:
    """Raise Unsupported unless the store's schema revision is the installed MLflow's head (the
    revision its models, and so every query here, describe)."""
    import sqlalchemy as sa
    from mlflow.store.db.utils import _get_latest_schema_revision

    try:
        found = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    except sa.exc.SQLAlchemyError:
        conn.rollback()
        raise Unsupported("the store has no MLflow schema revision (alembic_version)") from None
    head = _get_latest_schema_revision()
    if found != head:
        raise Unsupported(
            f"the store's schema revision {found} is not {head}, the one this MLflow reads"
        )


@contextmanager
def _reading(conn: Any) -> Iterator[None]:
    """A transaction that cannot write, with the settings MLflow's own sessions use (on SQLite:
    LIKE is case-sensitive, a writer's lock is waited for); a pooled connection (the server's)
    is given back as it was."""
    import sqlalchemy as sa

    conn.rollback()  # (a fresh transaction: PostgreSQL sets READ ONLY before any query)
    sqlite = conn.dialect.name == "sqlite"
    if sqlite:
        for pragma in ("busy_timeout = 20000", "case_sensitive_like = true", "query_only = 1"):
            conn.exec_driver_sql(f"PRAGMA {pragma}")
    elif conn.dialect.name == "postgresql":
        conn.execute(sa.text("SET TRANSACTION READ ONLY"))
    try:
        yield
    finally:
        conn.rollback()
        if sqlite:
            conn.exec_driver_sql("PRAGMA query_only = 0")
            conn.rollback()


def active_experiments(conn: Any) -> list[int]:
    """The ids of every active experiment (what `search_runs` over all experiments reads)."""
    import sqlalchemy as sa

    E = _models().Experiment
    return [int(e) for e in conn.execute(
        sa.select(E.experiment_id).where(E.lifecycle_stage == "active")).scalars()]  # fmt: skip


def _keyed(column: Any, keys: tuple[str, ...], prefixes: tuple[str, ...]) -> Any:
    import sqlalchemy as sa

    parts = ([column.in_(keys)] if keys else []) + [
        column.startswith(p, autoescape=True) for p in prefixes
    ]
    return sa.or_(*parts) if parts else sa.false()


def read_sql(conn: Any, experiment_ids: list[str] | None, filter_string: str | None,
             want: Want) -> list[list[Any]]:  # fmt: skip
    """The runs matching `filter_string` (MLflow's syntax) in these experiments (all active ones
    when None), active runs only, in `search_runs`' order: rows of [run_id, name, status,
    start_time, end_time, experiment_id, tags, metrics, params] with what `want` names.

    Raises:
        Unsupported: the schema is not the one this MLflow knows.
        MlflowException: a malformed filter (MLflow's own message).
    """
    _models()
    check_schema(conn)
    with _reading(conn):
        return _read_rows(conn, experiment_ids, filter_string, want)


def _read_rows(conn: Any, experiment_ids: list[str] | None, filter_string: str | None,
               want: Want) -> list[list[Any]]:  # fmt: skip
    import sqlalchemy as sa
    from sqlalchemy.orm import Session

    m = _models()
    parsed = m.parse(filter_string)
    attribute, joined, datasets = m.clauses(parsed, Session(bind=conn), conn.dialect.name)
    base = sa.select(m.Run.run_uuid)
    for sub in joined:
        base = base.join(sub)
    for sub in datasets:
        base = base.join(sub, m.Run.run_uuid == sub.c.destination_id)
    ids = active_experiments(conn) if experiment_ids is None else [int(e) for e in experiment_ids]
    base = base.where(m.Run.experiment_id.in_(ids),
                      m.Run.lifecycle_stage == "active", *attribute)  # fmt: skip
    cols = (m.Run.run_uuid, m.Run.name, m.Run.status, m.Run.start_time, m.Run.end_time,
            m.Run.experiment_id)  # fmt: skip
    stmt = base.with_only_columns(*cols).distinct().order_by(m.Run.start_time.desc(),
                                                             m.Run.run_uuid)  # fmt: skip
    rows = {r[0]: [*r, {}, {}, {}] for r in conn.execute(stmt).all()}
    T, M, P = m.Tag, m.Metric, m.Param
    side = [(6, sa.select(T.run_uuid, T.key, T.value), T, want.tags, want.tag_prefixes),
            (7, sa.select(M.run_uuid, M.key, M.value, M.is_nan), M, want.metrics,
             want.metric_prefixes),
            (8, sa.select(P.run_uuid, P.key, P.value), P, want.params, ())]  # fmt: skip
    for slot, stmt, table, keys, prefixes in side:
        if not keys and not prefixes:
            continue
        stmt = stmt.where(_keyed(table.key, keys, prefixes))
        for found in _by_runs(conn, stmt, table, list(rows), ids, m.Run):
            for run, key, value, *nan in found:
                cell = rows.get(run)
                if cell is not None:  # (a run of these experiments the filter left out)
                    cell[slot][key] = math.nan if nan and nan[0] else value
    return list(rows.values())


FEW_RUNS = 2000  # up to this many runs, side tables are read by run id; beyond, by experiment


def _by_runs(conn: Any, stmt: Any, table: Any, run_ids: list[str], experiment_ids: list[int],
             run: Any) -> Iterator[list[Any]]:  # fmt: skip
    """`stmt`'s rows for these runs: by their ids in chunks when they are few, else every row of
    the experiments' active runs (one join; the caller drops the runs the filter left out),
    which is what a ranking of most of a store wants."""
    if len(run_ids) <= FEW_RUNS:
        yield from _in_chunks(conn, stmt, table.run_uuid, run_ids)
        return
    yield conn.execute(
        stmt.join(run, run.run_uuid == table.run_uuid).where(
            run.experiment_id.in_(experiment_ids), run.lifecycle_stage == "active")
    ).all()  # fmt: skip


def _in_chunks(conn: Any, stmt: Any, column: Any, ids: list[str]) -> Iterator[list[Any]]:
    """`stmt`'s rows where `column` is one of `ids`, 500 ids a query (SQLite's bound-variable
    limit)."""
    for i in range(0, len(ids), 500):
        yield conn.execute(stmt.where(column.in_(ids[i : i + 500]))).all()


def read_params(conn: Any, run_ids: list[str]) -> dict[str, dict[str, str]]:
    """Every param of these runs (run id -> {key: value})."""
    import sqlalchemy as sa

    P = _models().Param
    out: dict[str, dict[str, str]] = {r: {} for r in run_ids}
    with _reading(conn):
        stmt = sa.select(P.run_uuid, P.key, P.value)
        for found in _in_chunks(conn, stmt, P.run_uuid, run_ids):
            for run, key, value in found:
                out[run][key] = value
    return out


# ---------------------------------------------------------------------------------------------
# where the runs come from: the local SQL store, xp server's endpoint, or nowhere (None)


def _engine(uri: str) -> Any:
    import sqlalchemy as sa

    return sa.create_engine(uri, poolclass=sa.NullPool)


def _sqlite_file(uri: str) -> str | None:
    from sqlalchemy.engine import make_url

    url = make_url(uri)
    return url.database if url.get_backend_name() == "sqlite" else None


def _from_sql(uri: str, experiment_ids: list[str] | None, filter_string: str | None,
              want: Want) -> list[LiteRun] | None:  # fmt: skip
    from pathlib import Path

    import sqlalchemy as sa

    path = _sqlite_file(uri)
    if path is not None and (path in ("", ":memory:") or not Path(path).is_file()):
        return None  # (no store yet: MLflow's own path makes it, and finds nothing)
    engine = _engine(uri)

    def loader(run_ids: list[str]) -> dict[str, dict[str, str]]:
        with engine.connect() as conn:
            return read_params(conn, run_ids)

    try:
        with engine.connect() as conn:
            rows = read_sql(conn, experiment_ids, filter_string, want)
    except sa.exc.SQLAlchemyError as e:
        raise Unsupported(f"the narrow read failed ({type(e).__name__})") from None
    return [_lite(r, want, loader) for r in rows]


def _post(uri: str, endpoint: str, body: dict[str, Any]) -> Any:
    """POST to the tracking server with MLflow's own credentials; None when it has no such
    route (a plain MLflow server)."""
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    resp = http_request(get_default_host_creds(uri), endpoint, "POST", json=body, max_retries=2)
    if resp.status_code == 404:
        return None
    if resp.status_code in (401, 403):
        raise XpError(
            f"the tracking server refused the read ({resp.status_code} "
            f"{'unauthenticated' if resp.status_code == 401 else 'forbidden'}): check "
            "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD and your permissions"
        )
    if resp.status_code == 400:
        from mlflow.exceptions import MlflowException

        raise MlflowException(resp.json().get("message", resp.text))
    if resp.status_code == 501:  # (the server's store: a schema it does not know)
        raise Unsupported(f"xp server: {resp.json().get('message', resp.text)}")
    if resp.status_code != 200:
        raise Unsupported(f"xp server's narrow read answered {resp.status_code}")
    return resp.json()


def _from_server(uri: str, experiment_ids: list[str] | None, filter_string: str | None,
                 want: Want) -> list[LiteRun] | None:  # fmt: skip
    body = {"experiment_ids": experiment_ids, "filter": filter_string, "want": want.as_json()}
    found = _post(uri, ENDPOINT, body)
    if found is None:
        return None

    def loader(run_ids: list[str]) -> dict[str, dict[str, str]]:
        return _post(uri, PARAMS_ENDPOINT, {"run_ids": run_ids})["params"]

    return [_lite(r, want, loader) for r in found["runs"]]


def fetch(experiment_ids: list[str] | None, filter_string: str | None,
          want: Want) -> list[LiteRun] | None:  # fmt: skip
    """The runs (as `read_sql` describes them) of the current tracking store, or None where it
    cannot be read narrowly (the caller uses `search_runs`).

    Raises:
        Unsupported: a SQL store or an xp server whose schema is not the one this MLflow knows.
    """
    import mlflow

    uri = mlflow.get_tracking_uri()
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme in SQL_SCHEMES:
        return _from_sql(uri, experiment_ids, filter_string, want)
    if scheme in ("http", "https"):
        return _from_server(uri, experiment_ids, filter_string, want)
    return None
