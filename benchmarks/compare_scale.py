"""Does ranking scale? `xp.compare` on 10,000 runs in 100 configurations vs a bare MLflow search.

Run from the repo root (no GPU needed):

    .venv/bin/python benchmarks/compare_scale.py [--runs 10000] [--configs 100] [--repeats 3]
                                                 [--rebuild] [--quick] [--profile]

The promise under test: ranking 10,000 training runs in 100 configurations takes at most 1.5x the
time of the bare `mlflow.search_runs` call that fetches them. Fetching is the floor: nothing that
reads every run from the store can be faster than MLflow reading them.

The store. A SQLite MLflow store with one experiment and `--runs` runs that look like xp training
runs of the digits project: the real digits config (`projects/digits/config.yaml`) with 2-3 keys
varied per configuration (`optim.lr`, `train.batch_size`, `model.dropout`), flattened and hashed
by `xp.config` exactly as xp logs it (45 params, `xp.config_hash`), the tags `xp.record` writes
(33: `xp.kind=train`, `xp.project=digits`, git, data md5s, environment, outcome), the 22
classification metrics a finished run has (one value each, at the best step: search reads only
the latest value), and 4 dataset inputs (search loads them too). Runs are spread evenly over the
configurations (seeds 1..runs/configs); 3% are `failed` without test metrics, and 1% (the first
seeds of the last configurations) were tested on an older test split (a second
`xp.data.test.md5`), so the ranking meets its split warning. Metric values are normal per
configuration, the top three with equal means (ties to find). Not stored: metric histories and
logged models (search returns neither). Building uses `MlflowClient.create_run`, `log_batch`,
`log_inputs` and `set_terminated` per run in a few worker processes (SQLite in WAL mode,
`synchronous=OFF` while building only; about 30 ms a run on 2 busy cores, 5 minutes for 10,000).
It is cached in `benchmarks/results/compare_store/` by (runs, configs, layout version);
`--rebuild` forces a new one. Every measurement runs on a fresh copy of the cached
database in a temporary folder, so the cache never changes.

What is timed (wall clock, `time.perf_counter`; CPU time of this process alongside):

- `search` (the floor): `mlflow.search_runs(experiment_ids=[id], filter_string="tags.`xp.kind` =
  'train'", output_format="list")`. With its default `max_results` (100,000) the fluent call pages
  through everything itself, 10,000 runs a page (`NUM_RUNS_PER_PAGE_PANDAS`); one call returns
  every run.
- `xp`: `xp.compare.fetch_runs(project="digits")` then `rank_groups(runs, metric="test/f1")` in
  one block; `t_fetch_xp` and `t_rank` are its two phases, `t_xp_total` their sum.
- `search_pages1000` (for explanation only, not part of the ratio): the same search as
  `MlflowClient.search_runs` in a `page_token` loop with `max_results=1000` (the client's default
  page, and what `xp.record.track.search_runs` uses), to show what the page size alone costs.

One untimed warm-up of every arm comes first (imports, the SQLAlchemy engine, the OS page cache
of the database); its times are reported as `warmup_s`. Then `--repeats` rounds; within a round
the arms run back to back and the order alternates from round to round (ABBA), so drift from
other processes on the machine hits all arms alike. Garbage from one arm is collected before the
next arm starts, outside the timers.

How to read the figures (JSON on stdout and in `benchmarks/results/compare_scale.json`, a
summary on stderr):

- `timings.<arm>.median_s` is the median over the rounds and `runs_s` lists them all (`cpu_*`
  the same for CPU time; when wall is well above CPU the process was waiting for a core).
- `ratio` = (median `t_fetch_xp` + median `t_rank`) / median `search`: the promise is
  `ratio <= 1.5`. `paired_ratios` are the per-round ratios (the arms ran seconds apart) and
  `paired_ratio_median` their median; if it disagrees much with `ratio`, the machine was not quiet.
- `ratio_cpu` is the same ratio from CPU times: steadier on a shared machine.
- `fetch_over_search` isolates the fetch: t_fetch_xp / search. With `search_pages1000` close to
  `t_fetch_xp`, the fetch's extra time is the page size, not xp's code.
- `spread` (max/min of an arm's runs) well above 1.1 means the machine was busy; re-run with more
  `--repeats`.
- Where the time goes (cProfile and `gc.disable()` on the 10,000-run store, 2 busy cores): both
  fetches are SQLAlchemy building ~110 ORM rows a run (45 params, 33 tags, 22 metrics, 4
  inputs) and Python's cyclic garbage collector walking them (~19,000 collections a fetch, more
  than half the CPU time: 35 s with it, 17 s without, for the bare search). So the floor scales
  with what a run carries, not just with the number of runs, and `search` costs several seconds
  per thousand runs here. `rank_groups` is small next to it (~1.3 s): its largest part is the
  explicit `gc.collect()` inside statsmodels' Holm correction, a full collection over every
  object the fetched runs hold.
- `checks` says what each arm returned (number of runs, groups, warnings), so a fast arm cannot
  be fast by returning less.
- `build_seconds` is the time to build the store in this invocation (null when it came from the
  cache; `store.build_seconds` is the time it took when it was built).

`--profile` adds one cProfile pass over each arm after the timed rounds (profiled time is
inflated and not comparable): the top functions by own time go to stderr and into the JSON
(`profile`), the raw stats to `benchmarks/results/compare_scale.<arm>.prof`. `--quick` is a
smoke run on 1,000 runs in 10 configurations. The script measures and reports; it asserts
nothing.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
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
PROMISE_MAX_RATIO = 1.5
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
        "cpu_runs_s": [round(t, 4) for t in cpu],
    }


def measure(exp_id: str, repeats: int, profile: bool) -> dict[str, Any]:
    import mlflow

    from xp.compare import fetch_runs, rank_groups

    def search() -> list[Any]:
        return mlflow.search_runs(
            experiment_ids=[exp_id], filter_string=TRAIN_FILTER, output_format="list"
        )

    def search_pages1000() -> list[Any]:
        client, runs, token = mlflow.MlflowClient(), [], None
        while True:
            page = client.search_runs([exp_id], TRAIN_FILTER, max_results=1000, page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def xp_arm() -> dict[str, Any]:
        c0, t0 = time.process_time(), time.perf_counter()
        runs = fetch_runs(project=PROJECT, experiment=None, filter_string=None)
        c1, t1 = time.process_time(), time.perf_counter()
        result = rank_groups(runs, metric=METRIC)
        c2, t2 = time.process_time(), time.perf_counter()
        return {"t_fetch": t1 - t0, "t_rank": t2 - t1, "c_fetch": c1 - c0, "c_rank": c2 - c1,
                "runs": runs, "result": result}  # fmt: skip

    arms: dict[str, Callable[[], Any]] = {
        "search": search, "xp": xp_arm, "search_pages1000": search_pages1000,
    }  # fmt: skip
    checks: dict[str, Any] = {}
    warmup: dict[str, float] = {}
    log("warm-up (untimed)...")
    for name, fn in arms.items():
        wall, _, out = timed(fn)
        warmup[name] = round(wall, 3)
        if name == "xp":
            res = out["result"]
            checks["xp"] = {
                "runs_fetched": len(out["runs"]), "groups": len(res["groups"]),
                "ranked_groups": sum(g["rank"] is not None for g in res["groups"]),
                "tied_with_top": sum(bool(g["tied_with_top"]) for g in res["groups"]),
                "n_failed": res["n_failed"], "warnings": res["warnings"],
            }  # fmt: skip
        else:
            checks[name] = {"runs_fetched": len(out)}
        del out
    wall: dict[str, list[float]] = {k: [] for k in ("search", "search_pages1000", "xp_total",
                                                     "t_fetch_xp", "t_rank")}  # fmt: skip
    cpu: dict[str, list[float]] = {k: [] for k in wall}
    order = ["search", "xp", "search_pages1000"]
    for r in range(repeats):
        seq = order if r % 2 == 0 else order[::-1]  # ABBA: drift hits every arm alike
        line = []
        for name in seq:
            t, c, out = timed(arms[name])
            if name == "xp":
                wall["xp_total"].append(t)
                cpu["xp_total"].append(c)
                wall["t_fetch_xp"].append(out["t_fetch"])
                wall["t_rank"].append(out["t_rank"])
                cpu["t_fetch_xp"].append(out["c_fetch"])
                cpu["t_rank"].append(out["c_rank"])
                line.append(f"xp {t:.2f}s (fetch {out['t_fetch']:.2f} + rank {out['t_rank']:.2f})")
            else:
                wall[name].append(t)
                cpu[name].append(c)
                line.append(f"{name} {t:.2f}s")
            del out
        log(f"round {r + 1}/{repeats}: " + ", ".join(line))
    timings = {k: summary(wall[k], cpu[k]) for k in wall}
    med = {k: v["median_s"] for k, v in timings.items()}
    cmed = {k: v["cpu_median_s"] for k, v in timings.items()}
    paired = [(f + k) / s for f, k, s in zip(wall["t_fetch_xp"], wall["t_rank"], wall["search"])]
    out = {
        "timings": timings,
        "t_search": med["search"],
        "t_fetch_xp": med["t_fetch_xp"],
        "t_rank": med["t_rank"],
        "t_xp_total": med["xp_total"],
        "ratio": round((med["t_fetch_xp"] + med["t_rank"]) / med["search"], 3),
        "paired_ratios": [round(p, 3) for p in paired],
        "paired_ratio_median": round(statistics.median(paired), 3),
        "ratio_cpu": round((cmed["t_fetch_xp"] + cmed["t_rank"]) / cmed["search"], 3),
        "fetch_over_search": round(med["t_fetch_xp"] / med["search"], 3),
        "rank_over_search": round(med["t_rank"] / med["search"], 3),
        "pages1000_over_search": round(med["search_pages1000"] / med["search"], 3),
        "promise_max_ratio": PROMISE_MAX_RATIO,
        "warmup_s": warmup,
        "checks": checks,
    }
    if profile:
        out["profile"] = profile_arms(arms)
    return out


def profile_arms(arms: dict[str, Callable[[], Any]], top: int = 15) -> dict[str, Any]:
    """One cProfile pass per arm: the functions with the most own time (and their cumulative)."""
    import cProfile
    import pstats

    found: dict[str, Any] = {}
    for name, fn in arms.items():
        gc.collect()
        prof = cProfile.Profile()
        prof.runcall(fn)
        path = RESULTS_DIR / f"compare_scale.{name}.prof"
        prof.dump_stats(path)
        st = pstats.Stats(prof)
        rows = sorted(st.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
        found[name] = {
            "total_s": round(st.total_tt, 3),
            "top_tottime": [
                {
                    "function": f"{Path(f).name}:{line}({func})",
                    "calls": nc,
                    "tottime_s": round(tt, 3),
                    "cumtime_s": round(ct, 3),
                }  # fmt: skip
                for (f, line, func), (_cc, nc, tt, ct, _callers) in rows
            ],
            "prof_file": str(path.relative_to(REPO)),
        }
        log(f"\nprofile of {name}: {st.total_tt:.2f} s profiled; top own time:")
        for row in found[name]["top_tottime"][:10]:
            log(f"  {row['tottime_s']:7.3f} s own {row['cumtime_s']:7.3f} s cum "
                f"{row['calls']:>8} calls  {row['function']}")  # fmt: skip
    return found


def environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "sqlite": sqlite3.sqlite_version,
        **{p: pkg_version(p) for p in ("mlflow", "sqlalchemy", "numpy", "scipy", "statsmodels")},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=None, help="training runs (default 10000)")
    ap.add_argument("--configs", type=int, default=None, help="configurations (default 100)")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds (default 3)")
    ap.add_argument("--rebuild", action="store_true", help="build the store even if cached")
    ap.add_argument("--quick", action="store_true", help="1000 runs in 10 configurations")
    ap.add_argument("--profile", action="store_true", help="one cProfile pass per arm")
    ap.add_argument("--build-workers", type=int, default=2, help="processes writing the store")
    args = ap.parse_args()
    size = QUICK if args.quick else DEFAULT
    n_runs = args.runs if args.runs is not None else size["runs"]
    n_configs = args.configs if args.configs is not None else size["configs"]

    load_before = os.getloadavg()
    folder, meta = cached_store(n_runs, n_configs, args.rebuild, args.build_workers)
    with tempfile.TemporaryDirectory(prefix="xp-compare-bench-") as tmp:
        # a fresh copy per invocation: the timed code may write (WAL files), the cache must not
        shutil.copy2(folder / "mlflow.db", Path(tmp) / "mlflow.db")
        # before anything imports xp or mlflow: fetch_runs reads the store from the environment
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        figures = measure(meta["experiment_id"], args.repeats, args.profile)
    report = {
        "benchmark": "compare_scale",
        "n_runs": n_runs,
        "n_configs": n_configs,
        "repeats": args.repeats,
        "build_seconds": meta["build_seconds"] if meta["built_now"] else None,
        **figures,
        "store": {k: v for k, v in meta.items() if k != "built_now"},
        "load_avg_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "env": environment(),
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    verdict = "within" if report["ratio"] <= PROMISE_MAX_RATIO else "ABOVE"
    log(
        f"\n{n_runs} runs / {n_configs} configs: search {report['t_search']:.2f} s, "
        f"xp fetch {report['t_fetch_xp']:.2f} s + rank {report['t_rank']:.2f} s "
        f"-> ratio {report['ratio']:.2f} (paired {report['paired_ratio_median']:.2f}, "
        f"cpu {report['ratio_cpu']:.2f}), {verdict} the {PROMISE_MAX_RATIO}x promise; "
        f"1000-run pages alone: {report['pages1000_over_search']:.2f}x search"
    )
    log(f"written to {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
