"""Concurrent writers: N processes log through xp's tracker at once, to SQLite and to a server.

Run from the repo root (no GPU needed; PostgreSQL at 127.0.0.1:5432 for the server store):

    .venv/bin/python benchmarks/store_load.py                    # N = 4, 16, 32; 500 steps each
    .venv/bin/python benchmarks/store_load.py --quick            # N = 4, 8; 100 steps (smoke run)
    .venv/bin/python benchmarks/store_load.py --stores sqlite --writers 32 --steps 2000
    .venv/bin/python benchmarks/store_load.py --writer fork      # a warm worker's forked writer

The target: 0 lost points and 0 errors at 32 writers, on both stores.

What each writer does. A writer is this script started again with `--child`, one process per
writer, all at once. It opens its own run the way `xp train` does: `use_writer(--writer)` and
`start_writer(training=True)` (by default xp's metric writer process, `python -m
xp.metric_writer`, as a training loop starts it), then `xp.record.track.start_tracker(True, ...)`,
which calls `configure_store` (it reads `MLFLOW_TRACKING_URI`) and starts an MLflow run in the
round's experiment (`MLFLOW_EXPERIMENT_NAME`), logs one point (`bench/warmup`, step 0, not counted
below) and flushes it, so its metric writer has opened the store (in training the writer's first
batch goes out within 2 s, long before the first checkpoint). Then it waits until every writer of
the round is that far: imports, run creation and opening the store are not what is measured,
and all writers log at the same time. It logs `--steps` steps, three metrics a step
(`train/loss`, `train/lr`, `train/grad_norm`, as the training loop does, each value a known
function of writer and step), with `tracker.log_metrics` (which buffers them and hands a batch to
the writer every 1000 points or 2 s), calls `tracker.flush()` every `--flush-every` steps
(default 100: `train.py` flushes before each checkpoint, and `vader` checkpoints every 100 steps)
and times each call, then `tracker.end("FINISHED")` (a last flush and the run's end).
`--step-ms` sleeps that long after every step (default 0: the heaviest load, every writer
logging as fast as it can). Any exception is caught, its traceback goes to the writer's log and
its one-line message into the writer's report (a JSON file); a writer that exits without a
report, or does not finish within `--timeout`, counts as an error too.

The stores, each fresh (nothing else writes to them):

- `sqlite`: `sqlite:///<temporary folder>/mlflow.db`, a new file per round, artifacts in the
  temporary folder; xp's `configure_store` turns on WAL and a busy timeout, as it does for users.
- `server`: `xp.record.server.start` (what `xp server` runs: MLflow's server with the
  basic-auth app, artifacts served, `--workers` from `--server-workers`, MLflow's default 4 when not
  given) on a free port, on a throwaway PostgreSQL database `xp_store_load_<pid>` (on `--postgres`;
  xp creates it, this script drops it at the end, as it stops the server, even after an error).
  Writers log in as the admin with `MLFLOW_TRACKING_USERNAME`/`MLFLOW_TRACKING_PASSWORD`
  (`--no-auth`: a server without the auth app, to see what it costs). One server and database serve
  all rounds, each round in an experiment of its own.

The experiment of a round is created by this script before the writers start (so its artifact
location is in the temporary folder); the writers find it by name.

What is reported, per store and N (a table on stderr; JSON on stdout and in `--json`, default
`benchmarks/results/store_load.json`, with every writer's figures under `writers_detail`):

- `written`: metric points the writers handed to `log_metrics` (steps logged x 3).
- `read_back`: points the store returns afterwards, `MlflowClient.get_metric_history` of every
  key of every writer's run (`xp.record.track.metric_histories`), read by this script after all
  writers ended.
- `lost`: (key, step) points a writer logged that are not in the store. `extra`: points read back
  beyond the written ones (`read_back - (written - lost)`: a point stored twice, or one nobody
  wrote); `duplicates` counts the (key, step) pairs stored more than once
  (`xp.record.track.repeated_points`). `wrong`: points whose stored value differs from the
  value logged.
  All four must be 0.
- `errors`: the number of writers that failed (an exception, an exit without a report, a
  timeout), plus runs that could not be read back; `first_error` is the first message,
  `error_messages` all of them. A writer that left no report (killed, or dead) is counted in
  `errors` and `unfinished` only: what it logged is unknown, so it adds nothing to `written`.
  `unfinished`: runs of the round whose status is not FINISHED. `server_log_errors`: lines of the
  server's log written during the round that say `Traceback` or `ERROR` (its first one in
  `server_log_first`), a hint of what the server saw.
- `flush_p50_ms`, `flush_p95_ms`, `flush_max_ms`: percentiles (numpy, linear interpolation) over
  every timed `tracker.flush()` call of every writer of the round: how long a training loop is
  blocked at a checkpoint until its metrics are in the store. `end_p50_ms`: the same for `end`;
  `warmup_flush_p50_ms`: the warm-up flush (the writer process opening the store), before the
  start.
- `last_end_s`: from the moment all writers were released until the last run had ended (the
  slowest writer's logging, flushes and `end`). `wall_s`: until the last writer process exited,
  which adds each process's interpreter teardown (about 1 s of CPU with MLflow loaded: with many
  writers on few cores, a large part of `wall_s`). `readback_s`: reading everything back.
- The environment: the CPU model (`lscpu`), the core count, the MLflow and Python versions.

The script measures and reports; it asserts nothing. Writers are processes of the same machine as
the store, so with many writers on few cores the figures are dominated by CPU contention: run it
on a quiet machine. It leaves nothing behind: the temporary folder, the server and the database
are removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "store_load.json"
PROJECT = "store_load"  # the project name the writers pass to start_tracker
KEYS = ("train/loss", "train/lr", "train/grad_norm")  # what the training loop logs every step
WARMUP_KEY = "bench/warmup"  # the one point each writer logs before the start (not counted)
STORES = ("sqlite", "server")
DEFAULT = {"writers": "4,16,32", "steps": 500}
QUICK = {"writers": "4,8", "steps": 100}
POSTGRES = "postgresql://postgres@127.0.0.1:5432"  # trust auth, as on the development machines
READY_TIMEOUT_S = 900  # 32 writers importing MLflow (and their writer processes) on 2 cores
POLL_S = 0.01

if str(REPO) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(REPO))


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def value(key: str, writer: int, step: int) -> float:
    """The value writer `writer` logs for `key` at `step`: known, so a read-back can check it."""
    if key == "train/loss":
        return 2.0 / (1.0 + 0.01 * step) + writer * 1e-3
    if key == "train/lr":
        return 1e-4 * min(1.0, step / 100)
    return 1.0 + ((writer * 7919 + step) % 97) / 97


# -- a writer ---------------------------------------------------------------------------------
def child(args: argparse.Namespace) -> int:
    """One writer: open a run, wait for the start, log, flush, end; report as JSON. Returns the
    exit code (1 after an error, which is in the report)."""
    folder = Path(args.dir)
    i = args.index
    report: dict[str, Any] = {"index": i, "run_id": None, "steps_logged": 0,
                              "points_logged": 0, "warmup_flush_s": None, "flush_s": [],
                              "end_s": None, "log_s": None, "error": None}  # fmt: skip
    tracker = None
    ended = False
    try:
        from xp.record.metric_writer import start_writer, use_writer
        from xp.record.track import start_tracker

        use_writer(args.writer)
        start_writer(training=True)  # as `xp.train.loop.train` does, before the run opens
        tags = {"xp.kind": "bench", "xp.bench.writer": str(i)}
        tracker = start_tracker(True, PROJECT, REPO, tags=tags, run_name=f"writer-{i}")
        report["run_id"] = tracker.run_id
        # one point and a flush before the start: the writer process has opened the store (in a
        # training loop its first batch goes out within 2 s, long before the first checkpoint)
        t = time.perf_counter()
        tracker.log_metrics({WARMUP_KEY: 0.0}, 0)
        tracker.flush()
        report["warmup_flush_s"] = time.perf_counter() - t
        (folder / f"ready-{i}").touch()
        go = folder / "go"
        while not go.exists():
            time.sleep(POLL_S)
        started = time.perf_counter()
        for step in range(1, args.steps + 1):
            tracker.log_metrics({k: value(k, i, step) for k in KEYS}, step)
            report["steps_logged"] = step
            report["points_logged"] += len(KEYS)
            if step % args.flush_every == 0:
                t = time.perf_counter()
                tracker.flush()
                report["flush_s"].append(time.perf_counter() - t)
            if args.step_ms:
                time.sleep(args.step_ms / 1000)
        t = time.perf_counter()
        ended = True  # end() is not tried twice, even if it fails
        tracker.end("FINISHED")
        report["end_s"] = time.perf_counter() - t
        report["log_s"] = time.perf_counter() - started
    except BaseException as e:  # (xp's one_line would not do: xp itself may fail to import)
        text = " ".join(str(e).split())
        report["error"] = f"{type(e).__name__}: {text}"[:300] if text else type(e).__name__
        traceback.print_exc()
        if tracker is not None and not ended:
            with contextlib.suppress(BaseException):
                tracker.end("FAILED")
    finally:
        path = folder / f"result-{i}.json"
        path.with_suffix(".tmp").write_text(json.dumps(report))
        path.with_suffix(".tmp").replace(path)  # the parent never reads half a report
    return 1 if report["error"] else 0


# -- the stores -------------------------------------------------------------------------------
@contextlib.contextmanager
def env(values: dict[str, str | None]) -> Iterator[None]:
    """Set (or, with None, unset) environment variables for a block, then restore them."""
    old = {k: os.environ.get(k) for k in values}

    def put(items: dict[str, str | None]) -> None:
        for k, v in items.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    try:
        put(values)
        yield
    finally:
        put(old)


@dataclass
class Store:
    """Where a round's writers log: the tracking URI, credentials, and the server's log."""

    name: str
    uri: str
    credentials: dict[str, str] = field(default_factory=dict)
    server_log: Path | None = None
    artifacts: Path | None = None  # for the round's experiment; None: the store's default

    def environ(self) -> dict[str, str | None]:
        return {"MLFLOW_TRACKING_URI": self.uri, "MLFLOW_EXPERIMENT_ID": None,
                "MLFLOW_RUN_ID": None, **self.credentials}  # fmt: skip


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def drop_database(postgres: str, name: str) -> None:
    """Drop a PostgreSQL database (its open connections too), if it exists."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(f"{postgres}/postgres", autocommit=True, connect_timeout=10) as con:
        con.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextlib.contextmanager
def server_store(
    postgres: str, folder: Path, workers: int | None, database: str, auth: bool
) -> Iterator[Store]:
    """xp's team server (`xp.record.server.start`) on a throwaway database; stopped and dropped
    after."""
    from xp.record import server
    from xp.record.store import redact

    spec = server.ServerSpec(backend=f"{postgres}/{database}", artifacts=folder / "artifacts",
                             state=folder / "state", port=free_port(), workers=workers,
                             auth=auth)  # fmt: skip
    password = secrets.token_urlsafe(16)
    proc = None
    try:
        with env({"MLFLOW_AUTH_ADMIN_PASSWORD": password}):
            proc = server.start(spec, folder / "server.log")
        log(f"  server at {spec.url} on {redact(spec.backend)} ({workers or 'default'} "
            f"workers, basic auth {'on' if auth else 'off'})")  # fmt: skip
        credentials = {"MLFLOW_TRACKING_USERNAME": server.ADMIN,
                       "MLFLOW_TRACKING_PASSWORD": password} if auth else {}  # fmt: skip
        yield Store("server", spec.url, credentials, server_log=folder / "server.log")
    finally:
        try:
            if proc is not None:
                server.stop(proc)
        finally:
            try:
                drop_database(postgres, database)
            except Exception as e:  # (said, not raised: it would hide the error that got here)
                log(f"  could not drop the database {database}: {type(e).__name__}: {e}")


def sqlite_store(folder: Path) -> Store:
    """A fresh SQLite store in `folder`, its artifacts beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    return Store("sqlite", f"sqlite:///{folder / 'mlflow.db'}", artifacts=folder / "artifacts")


def prepare(store: Store, experiment: str) -> str:
    """Open the store as xp does (tables, WAL) and create the round's experiment; its id."""
    import mlflow

    from xp.record.store import configure_store

    with env(store.environ()):
        configure_store(REPO)
        location = store.artifacts.resolve().as_uri() if store.artifacts else None
        return mlflow.MlflowClient().create_experiment(experiment, artifact_location=location)


# -- a round ----------------------------------------------------------------------------------
def start_writers(n: int, folder: Path, store: Store, experiment: str,
                  args: argparse.Namespace) -> list[subprocess.Popen]:  # fmt: skip
    """Start `n` writer processes (each `--child`), logging to `folder/writer-<i>.log`."""
    environ = {**os.environ, "MLFLOW_EXPERIMENT_NAME": experiment}
    for k, v in store.environ().items():
        if v is None:
            environ.pop(k, None)
        else:
            environ[k] = v
    procs = []
    for i in range(n):
        argv = [sys.executable, str(Path(__file__).resolve()), "--child", "--index", str(i),
                "--dir", str(folder), "--steps", str(args.steps),
                "--flush-every", str(args.flush_every), "--step-ms", str(args.step_ms),
                "--writer", args.writer]  # fmt: skip
        with open(folder / f"writer-{i}.log", "wb") as out:
            # cwd: the round's folder, so nothing MLflow may make (./mlruns) lands in the repo
            procs.append(subprocess.Popen(argv, cwd=folder, env=environ, stdout=out,
                                          stderr=subprocess.STDOUT))  # fmt: skip
    return procs


def wait_all(procs: list[subprocess.Popen], ready: list[Path], timeout: float) -> bool:
    """Wait until every writer is ready (or has exited); False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(r.exists() or p.poll() is not None for p, r in zip(procs, ready)):
            return True
        time.sleep(0.1)
    return False


def server_log_errors(store: Store, offset: int) -> tuple[int, str | None]:
    """Lines saying `Traceback` or `ERROR` in the server's log after `offset`, and the first."""
    if store.server_log is None or not store.server_log.exists():
        return 0, None
    with open(store.server_log, "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    hits = [ln.strip() for ln in text.splitlines() if "Traceback" in ln or "ERROR" in ln]
    return len(hits), (hits[0][:300] if hits else None)


def log_size(store: Store) -> int:
    if store.server_log is None or not store.server_log.exists():
        return 0
    return store.server_log.stat().st_size


def read_back(report: dict[str, Any]) -> dict[str, Any]:
    """What the store holds of one writer's run, against what it logged."""
    from xp.record.track import metric_histories, repeated_points

    histories = metric_histories(report["run_id"], list(KEYS))
    expected = {(k, s) for k in KEYS for s in range(1, report["steps_logged"] + 1)}
    stored: dict[tuple[str, int], float] = {}
    for k, points in histories.items():
        for s, v in points:
            stored.setdefault((k, s), v)
    read = sum(len(points) for points in histories.values())
    lost = len(expected - stored.keys())
    wrong = sum(1 for (k, s), v in stored.items()
                if (k, s) in expected and v != value(k, report["index"], s))  # fmt: skip
    return {"read_back": read, "lost": lost, "extra": read - (len(expected) - lost),
            "duplicates": repeated_points(histories), "wrong": wrong}  # fmt: skip


def percentile_ms(values: list[float], q: float) -> float | None:
    import numpy as np

    return round(float(np.percentile(values, q)) * 1000, 2) if values else None


def run_round(store: Store, n: int, folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """N writers at once into `store`; everything read back and counted."""
    from xp import one_line
    from xp.record.track import search_runs

    folder.mkdir(parents=True)
    experiment = f"xp-store-load-{store.name}-n{n}-{secrets.token_hex(4)}"
    experiment_id = prepare(store, experiment)
    offset = log_size(store)
    ready = [folder / f"ready-{i}" for i in range(n)]
    procs = start_writers(n, folder, store, experiment, args)
    errors: list[str] = []
    killed: set[int] = set()
    wall = None
    try:
        started = time.monotonic()
        if not wait_all(procs, ready, READY_TIMEOUT_S):
            errors.append(f"writers not ready within {READY_TIMEOUT_S} s")
        log(f"  {n} writers ready in {time.monotonic() - started:.1f} s; logging ...")
        t0 = time.perf_counter()
        (folder / "go").touch()
        deadline = time.monotonic() + args.timeout
        for i, p in enumerate(procs):
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                errors.append(f"writer {i} did not finish within {args.timeout} s; killed")
                killed.add(i)
        wall = time.perf_counter() - t0
    finally:
        for p in procs:  # (after a timeout or Ctrl-C) the writers we started, one by one
            if p.poll() is None:
                p.kill()
                p.wait()

    reports = []
    for i, p in enumerate(procs):
        path = folder / f"result-{i}.json"
        if path.exists():
            reports.append(json.loads(path.read_text()))
            if reports[-1]["error"]:
                errors.append(f"writer {i}: {reports[-1]['error']}")
            elif p.returncode != 0:
                errors.append(f"writer {i} exited ({p.returncode}) after a clean report")
        elif i not in killed:  # (a killed writer is one error, said above)
            tail = (folder / f"writer-{i}.log").read_text(errors="replace").strip()
            last = tail.splitlines()[-1][:200] if tail else "(no output)"
            errors.append(f"writer {i} exited ({p.returncode}) without a report: {last}")

    t = time.perf_counter()
    totals = {"read_back": 0, "lost": 0, "extra": 0, "duplicates": 0, "wrong": 0}
    with env(store.environ()):
        for r in reports:
            if r["run_id"] is None:
                r["lost"] = r["points_logged"]  # (none: it failed before its run existed)
                totals["lost"] += r["lost"]
                continue
            try:
                r.update(read_back(r))
            except Exception as e:
                errors.append(f"reading back writer {r['index']}: {one_line(e, 200)}")
                r["lost"] = r["points_logged"]
                totals["lost"] += r["lost"]
                continue
            for k in totals:
                totals[k] += r[k]
        runs = search_runs("", [experiment_id])
    readback_s = time.perf_counter() - t
    log_errors, log_first = server_log_errors(store, offset)

    flushes = [s for r in reports for s in r["flush_s"]]
    ends = [r["end_s"] for r in reports if r["end_s"] is not None]
    warmups = [r["warmup_flush_s"] for r in reports if r["warmup_flush_s"] is not None]
    logs = [r["log_s"] for r in reports if r["log_s"] is not None]
    for r in reports:
        r["flush_ms"] = [round(s * 1000, 2) for s in r.pop("flush_s")]
        for k in ("warmup_flush_s", "end_s", "log_s"):
            r[k] = round(r[k], 4) if r[k] is not None else None
    return {
        "store": store.name, "writers": n, "steps": args.steps,
        "written": sum(r["points_logged"] for r in reports), **totals,
        "errors": len(errors), "first_error": errors[0] if errors else None,
        "error_messages": errors, "runs": len(runs),
        "unfinished": sum(1 for run in runs if run.info.status != "FINISHED"),
        "server_log_errors": log_errors, "server_log_first": log_first,
        "flushes": len(flushes), "flush_p50_ms": percentile_ms(flushes, 50),
        "flush_p95_ms": percentile_ms(flushes, 95),
        "flush_max_ms": round(max(flushes) * 1000, 2) if flushes else None,
        "end_p50_ms": percentile_ms(ends, 50),
        "warmup_flush_p50_ms": percentile_ms(warmups, 50),
        "wall_s": round(wall, 2) if wall is not None else None,
        "last_end_s": round(max(logs), 2) if logs else None,
        "readback_s": round(readback_s, 2),
        "writers_detail": reports,
    }  # fmt: skip


# -- the parent -------------------------------------------------------------------------------
def cpu_model() -> str | None:
    """`lscpu`'s Model name."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or None
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return None


COLUMNS = ("store", "writers", "written", "read_back", "lost", "extra", "wrong", "errors",
           "flush_p50_ms", "flush_p95_ms", "last_end_s", "wall_s")  # fmt: skip


def table(rounds: list[dict[str, Any]]) -> str:
    """The summary: one line per store and N, the first error of each round below it."""
    rows = [COLUMNS] + [tuple("-" if r.get(c) is None else str(r.get(c)) for c in COLUMNS)
                        for r in rounds]  # fmt: skip
    widths = [max(len(row[j]) for row in rows) for j in range(len(COLUMNS))]
    lines = []
    for row, r in zip(rows, [None, *rounds]):
        lines.append("  ".join(cell.rjust(w) for cell, w in zip(row, widths)))
        if r is not None and r.get("first_error"):
            lines.append(f"    first error: {r['first_error']}")
        if r is not None and r.get("server_log_errors"):
            lines.append(
                f"    server log ({r['server_log_errors']} lines): {r['server_log_first']}"
            )
    return "\n".join(lines)


def run_store(
    name: str, writers: list[int], tmp: Path, args: argparse.Namespace, rounds: list[dict]
) -> None:
    """Every round of one store, appended to `rounds` as each ends."""
    with contextlib.ExitStack() as stack:
        if name == "server":
            database = f"xp_store_load_{os.getpid()}"
            server = server_store(args.postgres, tmp / "server", args.server_workers, database,
                                  auth=not args.no_auth)  # fmt: skip
            store = stack.enter_context(server)
        for n in writers:
            if name == "sqlite":
                store = sqlite_store(tmp / f"sqlite-n{n}")
            r = run_round(store, n, tmp / f"{name}-round-n{n}", args)
            rounds.append(r)
            log(f"  N={n}: written {r['written']}, read back {r['read_back']}, lost {r['lost']}, "
                f"errors {r['errors']}, wall {r['wall_s']} s")  # fmt: skip


def positive(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text}: give an integer of at least 1")
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--writers", help=f"numbers of writers, one round each (default {DEFAULT['writers']})"
    )
    ap.add_argument("--steps", type=positive, help=f"steps per writer (default {DEFAULT['steps']})")
    ap.add_argument("--stores", default=",".join(STORES), help="sqlite, server or both")
    ap.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK}")
    ap.add_argument("--flush-every", type=positive, default=100, help="steps between flushes")
    ap.add_argument("--step-ms", type=float, default=0.0, help="sleep after every step (ms)")
    ap.add_argument("--writer", default="process", choices=("process", "fork", "thread"),
                    help="xp's metric writer kind (`xp train`: process)")  # fmt: skip
    ap.add_argument("--server-workers", type=int, help="the server's processes (MLflow's default)")
    ap.add_argument("--no-auth", action="store_true",
                    help="the server without basic auth (what the auth app costs)")  # fmt: skip
    ap.add_argument("--postgres", default=POSTGRES, help="PostgreSQL server, without a database")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds a round's writers get")
    ap.add_argument("--json", type=Path, default=RESULTS, help="where the JSON goes")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--index", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        sys.exit(child(args))

    sizes = QUICK if args.quick else DEFAULT
    try:
        writers = [positive(n) for n in (args.writers or sizes["writers"]).split(",")]
    except (ValueError, argparse.ArgumentTypeError):
        ap.error(f"--writers {args.writers}: give numbers of writers, e.g. 4,16,32")
    args.steps = args.steps or sizes["steps"]
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    unknown = set(stores) - set(STORES)
    if unknown:
        ap.error(f"--stores: unknown {', '.join(sorted(unknown))}; use {', '.join(STORES)}")

    info = {"cpu": cpu_model(), "cores": os.cpu_count(), "mlflow": version("mlflow"),
            "python": platform.python_version()}  # fmt: skip
    log(f"CPU {info['cpu']} ({info['cores']} cores), MLflow {info['mlflow']}, Python "
        f"{info['python']}")  # fmt: skip
    log(f"writers {writers}, {args.steps} steps x {len(KEYS)} metrics, flush every "
        f"{args.flush_every} steps, {args.writer} metric writer, stores {stores}")  # fmt: skip
    rounds: list[dict[str, Any]] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="xp-store-load-") as tmp:
        for name in stores:
            log(f"{name}:")
            try:
                run_store(name, writers, Path(tmp), args, rounds)
            except Exception as e:  # a store that cannot be set up; the other one still runs
                from xp import one_line

                traceback.print_exc()
                message = one_line(e, 300)
                rounds.append({"store": name, "setup_error": message, "errors": 1,
                               "first_error": message})  # fmt: skip
    result = {"benchmark": "store_load", **info,
              "args": {"writers": writers, "steps": args.steps, "metrics_per_step": len(KEYS),
                       "flush_every": args.flush_every, "step_ms": args.step_ms,
                       "writer": args.writer, "server_workers": args.server_workers,
                       "server_auth": not args.no_auth,
                       "stores": stores},
              "seconds": round(time.perf_counter() - started, 1), "rounds": rounds}  # fmt: skip
    log("")
    log(table(rounds))
    log(f"total {result['seconds']} s")
    text = json.dumps(result, indent=2)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
