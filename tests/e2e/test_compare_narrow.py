"""`xp compare`'s narrow read on PostgreSQL: the same table as `search_runs` to the last digit.
Through `xp server` (xp.record.server_app), with the endpoint's refusals exactly as MLflow's own
routes refuse (401 without credentials, 403 for an experiment the user may not read):
`through_xp_server`, called by tests/e2e/test_server.py on the server one of its tests starts.

Needs PostgreSQL (see tests/e2e/conftest.py): skipped without one, failed with `CI=true`."""

from __future__ import annotations

import uuid

import mlflow
import pytest
import requests

from tests.narrow_store import FILTERS, assert_same, build_store, compare_both

pytestmark = pytest.mark.e2e


def _equivalent_everywhere(names: list[str], narrow_type: type, filters: list) -> None:
    from xp.compare import fetch_runs

    assert all(isinstance(r, narrow_type) for r in fetch_runs(None, None, None, "test/f1"))
    for filt in filters:
        for project, experiment in ((None, None), ("digits", names[1])):
            a, b, said = compare_both(project, experiment, filt)
            assert said == []
            assert_same(a, b)


def test_on_postgresql_the_narrow_read_is_search_runs_table(database, monkeypatch):
    from xp.record.narrow import LiteRun
    from xp.record.server import ensure_database

    ensure_database(database)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", database)
    names = build_store(mlflow.MlflowClient(), 3)
    _equivalent_everywhere(names, LiteRun, FILTERS)


def through_xp_server(team_server: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a running `xp server`: the narrow read's table, its 401s and 403s."""
    from mlflow.server.auth.client import AuthServiceClient

    from xp import XpError
    from xp.compare import fetch_runs
    from xp.record import narrow

    # the store is written directly (as fast as a test needs), then read through the server
    names = build_store(mlflow.MlflowClient(tracking_uri=team_server["database"]), 4)
    for key, value in team_server["env"].items():
        monkeypatch.setenv(key, value)
    _equivalent_everywhere(names, narrow.LiteRun, FILTERS[:4])  # (each search_runs is HTTP)

    url = team_server["env"]["MLFLOW_TRACKING_URI"]
    hidden = mlflow.MlflowClient().get_experiment_by_name(names[0]).experiment_id
    password = "bob-" + uuid.uuid4().hex
    auth = AuthServiceClient(url)
    auth.create_user("bob", password)
    auth.grant_user_permission("bob", "experiment", hidden, "DENY")
    body = {"experiment_ids": [hidden], "want": {"tags": ["xp.kind"]}}
    post = lambda path, body, creds: requests.post(url + path, json=body, auth=creds, timeout=30)  # noqa: E731
    assert post(narrow.ENDPOINT, body, None).status_code == 401
    assert post(narrow.ENDPOINT, body, ("bob", "wrong")).status_code == 401
    assert post(narrow.ENDPOINT, body, ("bob", password)).status_code == 403
    # with no experiment named, bob gets the ones he may read: the hidden one's runs are absent
    everything = post(narrow.ENDPOINT, {"want": {}}, ("admin", team_server["env"][
        "MLFLOW_TRACKING_PASSWORD"]))  # fmt: skip
    bobs = post(narrow.ENDPOINT, {"want": {}}, ("bob", password))
    assert bobs.status_code == 200
    hidden_ids = {r[0] for r in everything.json()["runs"] if str(r[5]) == hidden}
    assert hidden_ids and not hidden_ids & {r[0] for r in bobs.json()["runs"]}
    one = sorted(hidden_ids)[:1]
    assert post(narrow.PARAMS_ENDPOINT, {"run_ids": one}, ("bob", password)).status_code == 403
    assert post(narrow.PARAMS_ENDPOINT, {"run_ids": one}, None).status_code == 401
    # and `xp compare` as bob: the same one line MLflow's refusal would give
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    with pytest.raises(XpError, match="refused the read \\(403 forbidden\\)"):
        narrow.fetch([hidden], None, narrow.Want())
    with pytest.raises(XpError, match=f"refused experiment '{names[0]}' \\(403 forbidden\\)"):
        fetch_runs(None, names[0], None, "test/f1")
    ranked = {r.info.experiment_id for r in fetch_runs(None, None, None, "test/f1")}
    assert ranked and hidden not in ranked
    # and what bob sees through the endpoint is what MLflow's own search shows him
    a, b, said = compare_both(None, None, None)
    assert said == [] and a[0] != "error"
    assert_same(a, b)
