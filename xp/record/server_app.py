"""The app `xp server` runs: MLflow's own server (MLflow's basic-auth app in front, unless
`--no-auth`) plus two read-only routes for `xp compare` (`xp.record.narrow`):

- `POST /ajax-api/2.0/xp/runs/narrow` {experiment_ids?, filter?, want}: the runs, narrowly;
- `POST /ajax-api/2.0/xp/runs/params` {run_ids}: every param of some runs.

Behind basic auth they answer as MLflow's own routes do: 401 without valid credentials (MLflow's
`_before_request`), 403 when the user may not read an experiment asked for or a run's experiment
(a validator in MLflow's own table, so a fail-closed server does not refuse them for lack of
one); with no experiment named, a user gets the experiments they may read. Registered as the
`mlflow.app` entry points `xp` and `xp-open` (pyproject.toml), started by
`mlflow server --app-name xp`.
"""

from __future__ import annotations

import json
from typing import Any

from xp.record import narrow

_AUTH = False  # set by create_app: permissions are checked


def _store_engine() -> Any:
    from mlflow.server.handlers import _get_tracking_store

    return getattr(_get_tracking_store(), "engine", None)


def _reply(body: dict[str, Any], status: int = 200) -> Any:
    from flask import Response

    return Response(json.dumps(body), status=status, mimetype="application/json")


def _readable() -> Any:
    """Whether the request's user may read an experiment (MLflow's own permission lookup): a
    predicate, the user found once per request."""
    if not _AUTH:
        return lambda experiment_id: True
    from mlflow.server import auth

    if auth.sender_is_admin():
        return lambda experiment_id: True
    user = auth.authenticate_request().username
    return lambda experiment_id: auth._get_experiment_permission(str(experiment_id), user).can_read


def _body() -> dict[str, Any]:
    from flask import request

    body = request.get_json(silent=True)
    return body if isinstance(body, dict) else {}


def _run_experiments(run_ids: list[str]) -> set[str]:
    import sqlalchemy as sa
    from mlflow.store.tracking.dbmodels.models import SqlRun

    engine = _store_engine()
    if engine is None or not run_ids:
        return set()
    with engine.connect() as conn:
        stmt = sa.select(SqlRun.experiment_id).where(SqlRun.run_uuid.in_(run_ids)).distinct()
        return {str(e) for e in conn.execute(stmt).scalars()}


def validate_runs() -> bool:
    """The narrow read's permission check: every experiment named must be readable."""
    ids = _body().get("experiment_ids") or []
    may_read = _readable()
    return all(may_read(e) for e in ids)


def validate_params() -> bool:
    """The params read's: every run's experiment must be readable."""
    run_ids = [str(r) for r in _body().get("run_ids") or []]
    may_read = _readable()
    return all(may_read(e) for e in _run_experiments(run_ids))


def runs_view() -> Any:
    from mlflow.exceptions import MlflowException

    body, engine = _body(), _store_engine()
    if engine is None:  # (a store that is not SQL: the client reads through search_runs)
        return _reply({"message": "the tracking store is not a SQL store"}, 501)
    try:
        want = narrow.Want(**{k: tuple(v) for k, v in (body.get("want") or {}).items()})
    except TypeError as e:
        return _reply({"message": f"want: {e}"}, 400)
    ids = body.get("experiment_ids")
    with engine.connect() as conn:
        try:
            if ids is None:  # (every experiment this user may read)
                may_read = _readable()
                ids = [str(e) for e in narrow.active_experiments(conn) if may_read(e)]
            rows = narrow.read_sql(conn, ids, body.get("filter"), want)
        except narrow.Unsupported as e:
            return _reply({"message": str(e)}, 501)
        except MlflowException as e:  # a malformed filter: MLflow's own words
            return _reply({"message": e.message}, 400)
    return _reply({"runs": rows})


def params_view() -> Any:
    engine = _store_engine()
    if engine is None:
        return _reply({"message": "the tracking store is not a SQL store"}, 501)
    run_ids = [str(r) for r in _body().get("run_ids") or []]
    with engine.connect() as conn:
        return _reply({"params": narrow.read_params(conn, run_ids)})


def _add_routes(flask_app: Any) -> None:
    flask_app.add_url_rule(narrow.ENDPOINT, "xp_narrow_runs", runs_view, methods=["POST"])
    flask_app.add_url_rule(narrow.PARAMS_ENDPOINT, "xp_run_params", params_view, methods=["POST"])


def create_app() -> Any:
    """MLflow's basic-auth app with xp's routes, checked like MLflow's own."""
    global _AUTH
    from mlflow.server import app as flask_app
    from mlflow.server import auth

    _add_routes(flask_app)
    auth.BEFORE_REQUEST_VALIDATORS[(narrow.ENDPOINT, "POST")] = validate_runs
    auth.BEFORE_REQUEST_VALIDATORS[(narrow.PARAMS_ENDPOINT, "POST")] = validate_params
    _AUTH = True
    return auth.create_app(flask_app)


def create_open_app() -> Any:
    """MLflow's server with no auth (`xp server --no-auth`), with xp's routes."""
    from mlflow.server import app as flask_app
    from mlflow.server.fastapi_app import app

    _add_routes(flask_app)
    return app
