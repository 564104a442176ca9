"""`xp server`: a team's tracking server (MLflow on PostgreSQL, artifacts served, basic auth);
registered on the `xp` app by `xp.cli`."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from xp import XpError
from xp.cli.app import _fail, app
from xp.cli.terminal import out


@app.command()
def server(
    backend_store_uri: str = typer.Option(
        None,
        "--backend-store-uri",
        help="Where runs are kept (default: XP_SERVER_BACKEND or "
        "postgresql://postgres@127.0.0.1:5432/xp); the database is created if missing.",
    ),
    artifacts_destination: str = typer.Option(
        None,
        "--artifacts-destination",
        help="Where artifacts are kept, served through the server (default: <state>/artifacts).",
    ),
    state_dir: str = typer.Option(
        ".xp/server", "--state", help="The auth app's users, secret key and admin password."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="The address to listen on."),
    port: int = typer.Option(5000, "--port", min=1, max=65535),
    workers: int = typer.Option(None, "--workers", min=1, help="Server processes."),
    no_auth: bool = typer.Option(False, "--no-auth", help="Without MLflow's basic-auth app."),
) -> None:
    """Run a team tracking server: `mlflow server` on PostgreSQL, artifacts served, basic auth."""
    from xp.record import server as srv

    state = Path(state_dir)
    spec = srv.ServerSpec(
        backend=backend_store_uri or os.environ.get("XP_SERVER_BACKEND") or srv.DEFAULT_BACKEND,
        artifacts=Path(artifacts_destination or state / "artifacts"), state=state, host=host,
        port=port, workers=workers, auth=not no_auth,
    )  # fmt: skip
    log = state / "server.log"
    try:
        proc = srv.start(spec, log)
    except XpError as e:
        _fail(str(e))
    for line in srv.describe(spec, log):
        out.print(line, highlight=False)
    code = srv.wait(proc)  # until Ctrl-C or SIGTERM, which stop the server too
    if code == 130:
        raise typer.Exit(130)
    if code:
        _fail(f"the tracking server exited ({code}): see {log}", code=1)
