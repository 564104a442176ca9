"""Does ranking scale? `xp compare` on 10,000 runs in 100 configurations against MLflow's own
`search_runs`, on SQLite, on PostgreSQL and through `xp server`, and on 100,000 runs.

Run from the repo root (no GPU needed; PostgreSQL at 127.0.0.1:5432 for the PostgreSQL and
server arms, `XP_BENCH_POSTGRES` names another):

    .venv/bin/python benchmarks/compare_scale.py [--runs 10000] [--configs 100] [--repeats 3]
        [--rebuild] [--quick] [--profile] [--only sqlite,postgresql,server,scale,cli]
        [--server-search-rounds 1]

The targets (issue 25): ranking 10,000 runs in 100 configurations in <= 1 s on SQLite and on
PostgreSQL, >= 30x faster than `search_runs` fetching them; <= 2 s through `xp server`; on a
100,000-run store the time grows no faster than the number of runs (`growth_exponent` <= 1).

The store. A SQLite MLflow store with one experiment and `--runs` runs that look like xp training
runs of the digits project: the real digits config (`projects/digits/config.yaml`) with 2-3 keys
varied per configuration (`optim.lr`, `train.batch_size`, `model.dropout`), flattened and hashed
by `xp.config` exactly as xp logs it (45 params, `xp.config_hash`), the tags `xp.record` writes
(33), the 22 classification metrics a finished run has, and 4 dataset inputs. Runs are spread
evenly over the configurations; 3% are `failed` without test metrics, 1% were tested on an older
test split (a second `xp.data.test.md5`), and the top three configurations have equal means.
Built once with `MlflowClient` in worker processes (about 5 minutes for 10,000 runs on 2 cores)
and cached in `benchmarks/results/compare_store/`; `--rebuild` forces a new one. Every
measurement reads a fresh copy. The 100,000-run store is the 10,000-run one replicated ten times
in SQL (new run ids, same rows; cached beside it); the PostgreSQL store is the SQLite one copied
table by table into a database `xp_bench_compare_<runs>` (cached, checked by its run count).

The arms, each timed on wall clock (`time.perf_counter`, CPU time alongside):

- `search`: `mlflow.search_runs(experiment_ids=[id], filter_string="tags.`xp.kind` = 'train'",
  output_format="list")`, every run and everything it carries (what compare read before).
- `xp`: `xp.compare.fetch_runs(project="digits", metric="test/f1")` then `rank_groups` (the
  narrow read: `xp.record.narrow`, same runs, same table); `t_fetch` and `t_rank` its phases.
- `server` (through `xp server`, basic auth on, 2 workers, on the PostgreSQL copy): the same two
  arms over HTTP; `search` there runs `--server-search-rounds` times (it is slow).
- `cli`: the whole process, `xp compare --project digits --format json` on the SQLite copy (what a
  user waits for, imports included), against `search` as a whole process
  (`python -c 'import mlflow; mlflow.search_runs(...)'`).
- `scale`: the `xp` arm on the 100,000-run store against the same arm on 10,000 runs:
  `growth_exponent` = log(t_100k / t_10k) / log(10).

One untimed warm-up of every arm (through the server, 4 of the `xp` arm: each worker's first
requests after a start load its store, 3-14 s here), then `--repeats` rounds with the arms
alternating (ABBA).
`checks` says what each arm returned (runs, groups, warnings), so a fast arm cannot be fast by
returning less; the `xp` arm's table equals the one ranked from `search`'s runs (`same_table`).
JSON on stdout and in `benchmarks/results/compare_scale.json`, a summary on stderr; the script
measures and reports, it asserts nothing.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import math
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from itertools import product
from multiprocessing import get_context
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"
RESULTS = RESULTS_DIR / "compare_scale.json"
STORE_CACHE = RESULTS_DIR / "compare_store"
STORE_LAYOUT = 2  # bump when the generated runs change, so an old cached store is not reused
TARGET_S = 1.0  # ranking 10,000 runs, SQLite and PostgreSQL
TARGET_SERVER_S = 2.0
TARGET_SPEEDUP = 30.0
PROJECT = "digits"
METRIC = "test/f1"
EXPERIMENT = "compare-bench"
TRAIN_FILTER = "tags.`xp.kind` = 'train'"
SEED = 20240601
FAILED_SHARE = 0.03  # runs marked failed, without test metrics (a killed or diverged run)
OTHER_TEST_SHARE = 0.01  # runs tested on an older test split: the ranking's split warning
CHUNK = 250  # runs per build task: progress lines, and a worker's imports are paid once per task
DEFAULT = {"runs": 10_000, "configs": 100}
QUICK = {"runs": 1_000, "configs": 10}

# varied per configuration: 10 x 5 x 2 = 100 (more configurations use more dropout values)
LRS = ["0.0001", "0.0002", "0.0003", "0.0005", "0.0007", "0.001", "0.002", "0.003", "0.005", "0.01"]
BATCH_SIZES = [16, 32, 64, 128, 256]
DROPOUTS = [0.1, 0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]

COMMITS = [hashlib.sha1(f"commit {i}".encode()).hexdigest() for i in range(3)]
TEST_MD5 = hashlib.md5(b"digits test split").hexdigest()
OTHER_TEST_MD5 = hashlib.md5(b"digits test split, regenerated").hexdigest()
DATA = {  # name -> (path, md5, dataset context) as xp.record logs the digits inputs
    "train": ("data/digits/train.npz", hashlib.md5(b"train").hexdigest(), "train"),
    "validation": ("data/digits/validation.npz", hashlib.md5(b"val").hexdigest(), "validation"),
    "test": ("data/digits/test.npz", TEST_MD5, "test"),
    "backbone": ("models/digits_pretrained", hashlib.md5(b"backbone").hexdigest(), "train"),
}
CLASSIFICATION = ("loss", "accuracy", "precision", "recall", "f1")

if str(REPO) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(REPO))


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def pkg_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


# ---------------------------------------------------------------------------------------------
# the store: a plan (pure data, made in the parent) and workers that write it


def plan_store(n_runs: int, n_configs: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Configurations (params, hash, metric distribution) and one spec per run, deterministic."""
    import numpy as np

    from xp.config import config_hash, flatten, load_config
    from xp.train.seed import derive_seeds

    rng = np.random.default_rng(SEED)
    n_dropouts = -(-n_configs // (len(LRS) * len(BATCH_SIZES)))
    if n_dropouts > len(DROPOUTS):
        raise SystemExit(f"at most {len(LRS) * len(BATCH_SIZES) * len(DROPOUTS)} configurations")
    grid = list(product(DROPOUTS[:n_dropouts], BATCH_SIZES, LRS))[:n_configs]
    # Means spread over 0.75-0.95 with the top three equal: the ranking has real ties to find.
    means = np.sort(rng.uniform(0.75, 0.95, n_configs))[::-1].copy()
    means[1 : min(3, n_configs)] = means[0]
    configs = []
    for i, (dropout, batch, lr) in enumerate(grid):
        overrides = {"optim.lr": float(lr), "train.batch_size": batch, "model.dropout": dropout}
        config = load_config(PROJECT, overrides, REPO / "projects")
        configs.append({
            "hash": config_hash(config), "params": flatten(config), "mean": float(means[i]),
            "std": float(rng.uniform(0.005, 0.025)), "command": "xp train digits "
            + " ".join(f"{k}={v}" for k, v in overrides.items()),
        })  # fmt: skip
    seeds = {s: derive_seeds(s) for s in range(1, n_runs // n_configs + 2)}
    t0 = int(datetime(2025, 1, 6, tzinfo=timezone.utc).timestamp() * 1000)
    # The first seeds of the last configurations (at most half of each one's seeds) ran before
    # the test split was regenerated: a few extra groups in a second partition, not 1% of the
    # runs scattered into ~100 single-run groups that would swamp the ranking.
    per_config = max(1, n_runs // n_configs)
    old_split: dict[int, int] = {}  # configuration -> seeds 1..k on the old split
    left, c = round(OTHER_TEST_SHARE * n_runs), n_configs - 1
    while left > 0 and c >= 0:
        old_split[c] = min(left, max(1, per_config // 2))
        left, c = left - old_split[c], c - 1
    runs = []
    for i in range(n_runs):
        c, master = i % n_configs, i // n_configs + 1
        cfg = configs[c]
        failed = bool(rng.random() < FAILED_SHARE)
        other_test = master <= old_split.get(c, 0)
        f1 = float(np.clip(rng.normal(cfg["mean"], cfg["std"]), 0, 1))
        runs.append({
            "config": c, "seed": master, "seeds": seeds[master], "failed": failed,
            "test_md5": OTHER_TEST_MD5 if other_test else TEST_MD5,
            "commit": COMMITS[i * len(COMMITS) // n_runs], "f1": f1,
            "noise": rng.normal(0, 0.01, 8).tolist(), "best_step": int(rng.integers(50, 150)),
            "start_ms": t0 + i * 45_000, "duration_ms": int(rng.integers(20_000, 40_000)),
        })  # fmt: skip
    return configs, runs


def run_payload(cfg: dict[str, Any], spec: dict[str, Any], run_name: str) -> dict[str, Any]:
    """Tags, params, metrics and dataset inputs of one run, as xp.record / xp.train write them."""
    params = dict(cfg["params"], seed=str(spec["seed"]))
    params.update({f"seed.{k}": str(v) for k, v in spec["seeds"].items() if k != "split"})
    commit = spec["commit"]
    tags = {
        "mlflow.user": "bench", "mlflow.source.name": "/work/main/.venv/bin/xp",
        "mlflow.source.type": "LOCAL", "mlflow.source.git.commit": commit,
        "mlflow.runName": run_name, "xp.kind": "train", "xp.project": PROJECT,
        "xp.config_hash": cfg["hash"], "xp.git.commit": commit, "xp.git.branch": "main",
        "xp.git.dirty": "false", "xp.command": cfg["command"], "xp.env.deterministic": "true",
        "xp.env.python": "3.11.7", "xp.env.torch": "2.13.0+cpu", "xp.env.transformers": "5.23.0",
        "xp.env.mlflow": "3.17.2", "xp.env.device": "cpu",
        "xp.model.source": "path:models/digits_pretrained",
        "xp.outcome": "failed" if spec["failed"] else "ok", "xp.best_step": str(spec["best_step"]),
    }  # fmt: skip
    data = dict(DATA, test=(DATA["test"][0], spec["test_md5"], "test"))
    for name, (path, md5, _) in data.items():
        tags.update({f"xp.data.{name}.path": path, f"xp.data.{name}.md5": md5,
                     f"xp.data.{name}.dvc_status": "clean"})  # fmt: skip
    if spec["failed"]:
        tags["xp.failure"] = "loss is nan at step 40 (lr too high?)"
    # metrics: test/f1 drawn per configuration; the others follow it with a little noise
    f1, e = spec["f1"], spec["noise"]
    scores = {"loss": 1.2 - f1 + e[0], "accuracy": f1 + 0.01 + e[1], "precision": f1 + e[2],
              "recall": f1 + e[3], "f1": f1}  # fmt: skip
    metrics = {"train/loss": scores["loss"] * 0.8 + e[4], "train/lr": 1e-6,
               "train/grad_norm": 2.0 + e[5] * 50}  # fmt: skip
    for name in CLASSIFICATION:
        val = scores[name] + e[6]
        metrics[f"val/{name}"] = val
        metrics[f"best/val/{name}"] = val
        if not spec["failed"]:  # a failed run never reached the test evaluation
            metrics[f"test/{name}"] = scores[name]
    for name in CLASSIFICATION[1:]:
        metrics[f"baseline/test/{name}"] = 0.2 + e[7]
    return {"tags": tags, "params": params, "metrics": metrics, "data": data}


def _init_store(db_uri: str) -> str:
    """Create the schema and the experiment (one process: MLflow's migrations must not race)."""
    import mlflow

    exp_id = mlflow.MlflowClient(tracking_uri=db_uri).create_experiment(EXPERIMENT)
    with sqlite3.connect(db_uri.removeprefix("sqlite:///")) as con:
        con.execute("PRAGMA journal_mode=WAL")  # as xp.record.track sets it; persistent in the file
    return exp_id


def _build_chunk(
    db_uri: str, exp_id: str, configs: list[dict[str, Any]], specs: list[tuple[int, dict]]
) -> int:
    """Write some runs (in a worker process, so the build-only pragmas never reach the timing)."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    @event.listens_for(Engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout=60000")  # workers take turns at the write lock
        cur.execute("PRAGMA synchronous=OFF")  # a crash mid-build just means --rebuild
        cur.close()

    import mlflow
    from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param

    client = mlflow.MlflowClient(tracking_uri=db_uri)
    for i, spec in specs:
        p = run_payload(configs[spec["config"]], spec, f"bench-{i:06d}")
        start, end = spec["start_ms"], spec["start_ms"] + spec["duration_ms"]
        run = client.create_run(exp_id, start_time=start, tags=p["tags"])
        run_id, step = run.info.run_id, spec["best_step"]
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, end, step) for k, v in p["metrics"].items()],
            params=[Param(k, v) for k, v in p["params"].items()],
        )
        datasets = [
            DatasetInput(
                Dataset(name, md5, "local", json.dumps({"uri": path})),
                [InputTag("mlflow.data.context", context)],
            )
            for name, (path, md5, context) in p["data"].items()
        ]
        for attempt in range(3):
            try:
                client.log_inputs(run_id, datasets=datasets)
                break
            except mlflow.MlflowException as e:
                # MLflow looks a dataset up, then inserts it: two workers logging a new dataset
                # at once collide; the loser's transaction rolls back and a retry finds it.
                if "UNIQUE constraint failed: datasets" not in str(e) or attempt == 2:
                    raise
        client.set_terminated(run_id, "FAILED" if spec["failed"] else "FINISHED", end)
    return len(specs)


def build_store(folder: Path, n_runs: int, n_configs: int, workers: int) -> dict[str, Any]:
    """Build the store into `folder` (via a scratch folder, so a half-built one is never used)."""
    scratch = folder.with_name(folder.name + ".building")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    db_uri = f"sqlite:///{scratch / 'mlflow.db'}"
    t0 = time.perf_counter()
    configs, specs = plan_store(n_runs, n_configs)
    ctx = get_context("spawn")  # fresh interpreters: no state of this process leaks either way
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:
        exp_id = pool.submit(_init_store, db_uri).result()
    log(f"building {n_runs} runs in {n_configs} configurations with {workers} worker(s)...")
    indexed = list(enumerate(specs))
    chunks = [indexed[i : i + CHUNK] for i in range(0, n_runs, CHUNK)]
    done = 0
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        futures = [pool.submit(_build_chunk, db_uri, exp_id, configs, ch) for ch in chunks]
        try:
            for fut in as_completed(futures):
                done += fut.result()
                if done % (CHUNK * 8) == 0 or done == n_runs:
                    log(f"  {done}/{n_runs} runs, {time.perf_counter() - t0:.0f} s")
        except BaseException:
            pool.shutdown(cancel_futures=True)  # not minutes of chunks for a store never used
            raise
    with sqlite3.connect(scratch / "mlflow.db") as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the main file: one to copy
    meta = {
        "n_runs": n_runs, "n_configs": n_configs, "layout": STORE_LAYOUT, "experiment_id": exp_id,
        "build_seconds": round(time.perf_counter() - t0, 1), "build_workers": workers,
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "mlflow": pkg_version("mlflow"), "failed_runs": sum(s["failed"] for s in specs),
        "other_test_md5_runs": sum(s["test_md5"] == OTHER_TEST_MD5 for s in specs),
        "db_mb": round((scratch / "mlflow.db").stat().st_size / 2**20, 1),
    }  # fmt: skip
    (scratch / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    scratch.rename(folder)
    return meta


def cached_store(n_runs: int, n_configs: int, rebuild: bool, workers: int) -> tuple[Path, dict]:
    """The cached store for (runs, configs), built first if missing; (folder, meta)."""
    folder = STORE_CACHE / f"runs{n_runs}_configs{n_configs}_layout{STORE_LAYOUT}"
    meta_file = folder / "meta.json"  # written last: its presence means a complete store
    if rebuild or not meta_file.is_file():
        meta = build_store(folder, n_runs, n_configs, workers)
        meta["built_now"] = True
        return folder, meta
    meta = json.loads(meta_file.read_text())
    meta["built_now"] = False
    log(f"using the cached store {folder.relative_to(REPO)} (built in {meta['build_seconds']} s)")
    return folder, meta


# ---------------------------------------------------------------------------------------------
# the other stores: 10x replicated in SQL, and a PostgreSQL copy

RUN_TABLES = ("tags", "params", "metrics", "latest_metrics")  # keyed by run_uuid


def scaled_store(base: Path, meta: dict[str, Any], factor: int) -> tuple[Path, dict[str, Any]]:
    """The store replicated `factor` times (run ids changed: a non-hex first character per copy),
    cached beside it."""
    folder = base.with_name(base.name + f"_x{factor}")
    if (folder / "meta.json").is_file():
        return folder, json.loads((folder / "meta.json").read_text())
    scratch = folder.with_name(folder.name + ".building")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    t0 = time.perf_counter()
    shutil.copy2(base / "mlflow.db", scratch / "mlflow.db")
    log(f"replicating {meta['n_runs']} runs {factor}x in SQL...")
    with sqlite3.connect(scratch / "mlflow.db") as con:
        con.execute("PRAGMA synchronous=OFF")
        cols = {t: [r[1] for r in con.execute(f"PRAGMA table_info({t})")]
                for t in ("runs", *RUN_TABLES)}  # fmt: skip
        for k in range(1, factor):
            new = f"'{chr(ord('g') + k)}' || substr(run_uuid, 2)"  # (g..: never a hex id)
            for table in ("runs", *RUN_TABLES):
                names = cols[table]
                picked = [new if c == "run_uuid" else c for c in names]
                if table == "runs":
                    picked = [f"{c} + {k}" if c == "start_time" else c for c in picked]
                con.execute(f"INSERT INTO {table} ({', '.join(names)}) "
                            f"SELECT {', '.join(picked)} FROM {table} "
                            "WHERE substr(run_uuid, 1, 1) < 'g'")  # fmt: skip
        con.commit()
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    out = dict(meta, n_runs=meta["n_runs"] * factor, replicated_from=meta["n_runs"],
               build_seconds=round(time.perf_counter() - t0, 1))  # fmt: skip
    (scratch / "meta.json").write_text(json.dumps(out, indent=2) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    scratch.rename(folder)
    return folder, out


def pg_store(sqlite_db: Path, meta: dict[str, Any], base_uri: str) -> str:
    """A PostgreSQL copy of the SQLite store (MLflow makes the schema; rows copied table by
    table), cached as database `xp_bench_compare_<runs>`; its URI."""
    import mlflow
    import sqlalchemy as sa

    from xp.record.server import ensure_database

    uri = f"{base_uri}/xp_bench_compare_{meta['n_runs']}"
    ensure_database(uri)
    pg = sa.create_engine(uri, poolclass=sa.NullPool)
    with pg.connect() as con:
        try:
            found = con.execute(sa.text("SELECT count(*) FROM runs")).scalar()
        except sa.exc.SQLAlchemyError:
            found = None
    if found == meta["n_runs"]:
        log(f"using the cached PostgreSQL store {uri}")
        return uri
    t0 = time.perf_counter()
    log(f"copying {meta['n_runs']} runs into {uri}...")
    with pg.begin() as con:  # (an empty store: MLflow's own schema first)
        con.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    mlflow.MlflowClient(tracking_uri=uri).search_experiments()
    lite = sa.create_engine(f"sqlite:///{sqlite_db}")
    meta_pg = sa.MetaData()
    meta_pg.reflect(pg)
    order = ["experiments", "experiment_tags", "runs", *RUN_TABLES, "datasets", "inputs",
             "input_tags"]  # fmt: skip
    with lite.connect() as src, pg.begin() as dst:
        for table in order:
            dst.execute(sa.text(f"DELETE FROM {table}"))
        for table in order:
            t = meta_pg.tables[table]
            rows = src.execute(sa.text(f"SELECT * FROM {table}")).mappings().all()
            for i in range(0, len(rows), 20_000):
                dst.execute(t.insert(), [dict(r) for r in rows[i : i + 20_000]])
        dst.execute(
            sa.text(
                "SELECT setval(pg_get_serial_sequence('experiments', "
                "'experiment_id'), (SELECT max(experiment_id) FROM experiments))"
            )
        )
    with pg.connect() as con:
        con.execution_options(isolation_level="AUTOCOMMIT").execute(sa.text("ANALYZE"))
    log(f"  copied in {time.perf_counter() - t0:.0f} s")
    return uri


# ---------------------------------------------------------------------------------------------
# timing


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    gc.collect()  # the previous arm's garbage is collected here, not inside the next timer
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def summary(wall: list[float], cpu: list[float]) -> dict[str, Any]:
    return {
        "median_s": round(statistics.median(wall), 4),
        "runs_s": [round(t, 4) for t in wall],
        "spread": round(max(wall) / min(wall), 3),
        "cpu_median_s": round(statistics.median(cpu), 4),
    }


def arms(exp_id: str) -> dict[str, Callable[[], Any]]:
    import mlflow

    from xp.compare import fetch_runs, rank_groups

    def search() -> Any:
        runs = mlflow.search_runs(
            experiment_ids=[exp_id], filter_string=TRAIN_FILTER, output_format="list"
        )
        return {"runs": runs}

    def xp_arm() -> dict[str, Any]:
        t0 = time.perf_counter()
        runs = fetch_runs(project=PROJECT, metric=METRIC, warn=log)
        t1 = time.perf_counter()
        result = rank_groups(runs, metric=METRIC)
        return {"t_fetch": t1 - t0, "t_rank": time.perf_counter() - t1, "runs": runs,
                "result": result}  # fmt: skip

    return {"search": search, "xp": xp_arm}


def measure(exp_id: str, repeats: int, profile: bool, search_rounds: int | None = None,
            warmups: int = 1) -> dict[str, Any]:  # fmt: skip
    """The `search` and `xp` arms against the current MLFLOW_TRACKING_URI, ABBA."""
    from xp.compare import rank_groups, render
    from xp.record.narrow import LiteRun

    fns = arms(exp_id)
    wall: dict[str, list[float]] = {"search": [], "xp": [], "t_fetch": [], "t_rank": []}
    cpu: dict[str, list[float]] = {k: [] for k in wall}
    checks: dict[str, Any] = {}
    log("  warm-up (untimed)...")
    outs = {name: timed(fn)[2] for name, fn in fns.items()}
    for _ in range(warmups - 1):  # (a server: every worker's first request loads its store)
        timed(fns["xp"])
    res = outs["xp"]["result"]
    checks["xp"] = {
        "runs_fetched": len(outs["xp"]["runs"]), "groups": len(res["groups"]),
        "narrow": all(isinstance(r, LiteRun) for r in outs["xp"]["runs"]),
        "ranked_groups": sum(g["rank"] is not None for g in res["groups"]),
        "tied_with_top": sum(bool(g["tied_with_top"]) for g in res["groups"]),
        "n_failed": res["n_failed"], "warnings": res["warnings"],
    }  # fmt: skip
    plain = [r for r in outs["search"]["runs"] if "xp.reproduces" not in r.data.tags]
    checks["search"] = {"runs_fetched": len(outs["search"]["runs"])}
    checks["same_table"] = render(rank_groups(plain, METRIC), "json") == render(res, "json")
    del outs
    order = ["search", "xp"]
    for r in range(repeats):
        seq = order if r % 2 == 0 else order[::-1]
        line = []
        for name in seq:
            if name == "search" and search_rounds is not None and r >= search_rounds:
                continue
            t, c, out = timed(fns[name])
            wall[name].append(t)
            cpu[name].append(c)
            if name == "xp":
                for k in ("t_fetch", "t_rank"):
                    wall[k].append(out[k])
                    cpu[k].append(out[k])
                line.append(f"xp {t:.3f}s (fetch {out['t_fetch']:.3f} + rank {out['t_rank']:.3f})")
            else:
                line.append(f"search {t:.2f}s")
            del out
        log(f"  round {r + 1}/{repeats}: " + ", ".join(line))
    timings = {k: summary(wall[k], cpu[k]) for k in wall if wall[k]}
    out = {"timings": timings, "t_search": timings["search"]["median_s"],
           "t_xp": timings["xp"]["median_s"], "t_fetch": timings["t_fetch"]["median_s"],
           "t_rank": timings["t_rank"]["median_s"],
           "speedup": round(timings["search"]["median_s"] / timings["xp"]["median_s"], 1),
           "checks": checks}  # fmt: skip
    if profile:
        out["profile"] = profile_arms({"xp": fns["xp"]})
    return out


def profile_arms(fns: dict[str, Callable[[], Any]], top: int = 15) -> dict[str, Any]:
    """One cProfile pass per arm: the functions with the most own time."""
    import cProfile
    import pstats

    found: dict[str, Any] = {}
    for name, fn in fns.items():
        gc.collect()
        prof = cProfile.Profile()
        prof.runcall(fn)
        st = pstats.Stats(prof)
        rows = sorted(st.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
        found[name] = [{"function": f"{Path(f).name}:{line}({func})", "calls": nc,
                        "tottime_s": round(tt, 3), "cumtime_s": round(ct, 3)}
                       for (f, line, func), (_cc, nc, tt, ct, _callers) in rows]  # fmt: skip
        log(f"  profile of {name}: {st.total_tt:.2f} s profiled")
        for row in found[name][:10]:
            log(
                f"    {row['tottime_s']:7.3f} s own {row['cumtime_s']:7.3f} s cum {row['function']}"
            )
    return found


def measure_cli(db: Path, exp_id: str, repeats: int) -> dict[str, Any]:
    """Whole processes: `xp compare` against a bare search_runs script, alternating."""
    import subprocess

    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{db}", "NO_COLOR": "1"}
    xp_bin = str(Path(sys.executable).with_name("xp"))
    cmds = {
        "xp_compare": [xp_bin, "compare", "--project", PROJECT, "--format", "json"],
        "search_process": [sys.executable, "-c", "import mlflow; mlflow.search_runs("
                           f"experiment_ids=['{exp_id}'], filter_string=\"{TRAIN_FILTER}\", "
                           "output_format='list')"],
    }  # fmt: skip
    wall: dict[str, list[float]] = {k: [] for k in cmds}
    for r in range(repeats):
        for name in list(cmds) if r % 2 == 0 else list(cmds)[::-1]:
            t0 = time.perf_counter()
            subprocess.run(cmds[name], env=env, cwd=REPO, check=True, capture_output=True)
            wall[name].append(time.perf_counter() - t0)
        log(
            f"  round {r + 1}/{repeats}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in wall.items())
        )
    return {k: summary(v, v) for k, v in wall.items()}


def start_server(pg_uri: str, tmp: Path) -> tuple[Any, dict[str, str]]:
    from tests.e2e.conftest import free_port
    from xp.record import server

    password = "bench-" + hashlib.md5(str(tmp).encode()).hexdigest()
    os.environ["MLFLOW_AUTH_ADMIN_PASSWORD"] = password
    spec = server.ServerSpec(backend=pg_uri, artifacts=tmp / "artifacts", state=tmp / "state",
                             port=free_port(), workers=2)  # fmt: skip
    proc = server.start(spec, tmp / "server.log")
    return proc, {"MLFLOW_TRACKING_URI": spec.url, "MLFLOW_TRACKING_USERNAME": server.ADMIN,
                  "MLFLOW_TRACKING_PASSWORD": password}  # fmt: skip


def environment() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())  # fmt: skip
    return {
        "cpu": cpu, "python": platform.python_version(), "platform": platform.platform(),
        "cpu_count": os.cpu_count(), "sqlite": sqlite3.sqlite_version,
        **{p: pkg_version(p) for p in ("mlflow", "sqlalchemy", "numpy", "scipy", "statsmodels")},
    }  # fmt: skip


def _with_uri(uri: str, extra: dict[str, str] | None = None) -> Callable[[], None]:
    """Point MLflow at `uri` (and set `extra`); returns a function that undoes it."""
    import mlflow

    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", *(extra or {}))}
    os.environ.update({"MLFLOW_TRACKING_URI": uri, **(extra or {})})
    mlflow.set_tracking_uri(uri)

    def undo() -> None:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI", ""))

    return undo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=None, help="training runs (default 10000)")
    ap.add_argument("--configs", type=int, default=None, help="configurations (default 100)")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds (default 3)")
    ap.add_argument("--rebuild", action="store_true", help="build the store even if cached")
    ap.add_argument("--quick", action="store_true", help="1000 runs in 10 configurations")
    ap.add_argument("--profile", action="store_true", help="one cProfile pass of the xp arm")
    ap.add_argument("--build-workers", type=int, default=2, help="processes writing the store")
    ap.add_argument("--only", default="sqlite,postgresql,server,scale,cli", help="arms to run")
    ap.add_argument("--server-search-rounds", type=int, default=1)
    args = ap.parse_args()
    size = QUICK if args.quick else DEFAULT
    n_runs = args.runs if args.runs is not None else size["runs"]
    n_configs = args.configs if args.configs is not None else size["configs"]
    only = set(args.only.split(","))
    postgres = os.environ.get("XP_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432")

    load_before = os.getloadavg()
    folder, meta = cached_store(n_runs, n_configs, args.rebuild, args.build_workers)
    exp_id = meta["experiment_id"]
    report: dict[str, Any] = {
        "benchmark": "compare_scale",
        "n_runs": n_runs,
        "n_configs": n_configs,
        "repeats": args.repeats,
        "targets": {
            "xp_s": TARGET_S,
            "server_xp_s": TARGET_SERVER_S,
            "speedup": TARGET_SPEEDUP,
            "growth_exponent": 1.0,
        },
    }
    with tempfile.TemporaryDirectory(prefix="xp-compare-bench-") as tmp_name:
        tmp = Path(tmp_name)
        db = tmp / "mlflow.db"
        shutil.copy2(folder / "mlflow.db", db)  # a fresh copy: the cache never changes
        if "sqlite" in only or "scale" in only:
            log(f"SQLite, {n_runs} runs:")
            undo = _with_uri(f"sqlite:///{db}")
            report["sqlite"] = measure(exp_id, args.repeats, args.profile)
            undo()
        if "cli" in only:
            log("whole processes on SQLite:")
            report["cli"] = measure_cli(db, exp_id, args.repeats)
        if "scale" in only:
            big, big_meta = scaled_store(folder, meta, 10)
            big_db = big / "mlflow.db"  # (not copied, 3 GB: only the narrow read opens it)
            log(f"SQLite, {big_meta['n_runs']} runs (xp only):")
            undo = _with_uri(f"sqlite:///{big_db}")
            fn = arms(exp_id)["xp"]
            timed(fn)  # (warm-up)
            t_big = [timed(fn)[0] for _ in range(args.repeats)]
            undo()
            t_small = report["sqlite"]["t_xp"]
            med = statistics.median(t_big)
            report["scale"] = {
                "n_runs": big_meta["n_runs"],
                "t_xp": round(med, 4),
                "runs_s": [round(t, 4) for t in t_big],
                "t_xp_small": t_small,
                "ratio": round(med / t_small, 2),
                "growth_exponent": round(
                    math.log(med / t_small) / math.log(big_meta["n_runs"] / n_runs), 3
                ),
            }
            log(f"  {big_meta['n_runs']} runs: {med:.3f} s ({med / t_small:.1f}x the time)")
        if "postgresql" in only or "server" in only:
            pg_uri = pg_store(folder / "mlflow.db", meta, postgres)
            if "postgresql" in only:
                log(f"PostgreSQL, {n_runs} runs:")
                undo = _with_uri(pg_uri)
                report["postgresql"] = measure(exp_id, args.repeats, False)
                undo()
            if "server" in only:
                log("through xp server (PostgreSQL, basic auth, 2 workers):")
                from xp.record import server

                proc, env = start_server(pg_uri, tmp)
                try:
                    undo = _with_uri(env["MLFLOW_TRACKING_URI"], env)
                    report["server"] = measure(exp_id, args.repeats, False,
                                               args.server_search_rounds, warmups=4)  # fmt: skip
                    undo()
                finally:
                    server.stop(proc)
    report.update(
        store={k: v for k, v in meta.items() if k != "built_now"},
        load_avg_before_after=[round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        env=environment(),
        when=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    log(f"\n{n_runs} runs / {n_configs} configurations on {report['env']['cpu']}:")
    for arm, target in (
        ("sqlite", TARGET_S),
        ("postgresql", TARGET_S),
        ("server", TARGET_SERVER_S),
    ):
        if arm in report:
            r = report[arm]
            met = r["t_xp"] <= target and r["speedup"] >= TARGET_SPEEDUP
            log(f"  {arm}: xp {r['t_xp']:.3f} s (fetch {r['t_fetch']:.3f} + rank {r['t_rank']:.3f})"
                f", search_runs {r['t_search']:.2f} s: {r['speedup']:.0f}x; same table: "
                f"{r['checks']['same_table']}; target <= {target} s and >= {TARGET_SPEEDUP:.0f}x "
                f"{'met' if met else 'NOT met'}")  # fmt: skip
    if "scale" in report:
        s = report["scale"]
        log(
            f"  scale: {s['n_runs']} runs {s['t_xp']:.3f} s = {s['ratio']}x the time of {n_runs} "
            f"(growth exponent {s['growth_exponent']}; <= 1 is linear or better)"
        )
    if "cli" in report:
        c = report["cli"]
        log(
            f"  whole processes: xp compare {c['xp_compare']['median_s']:.2f} s, "
            f"a bare search_runs {c['search_process']['median_s']:.2f} s"
        )
    log(f"written to {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
