"""What a seed costs beyond its training: one `xp train` against repeats on warm workers and on
a process per seed.

Arms, alternating within each round, each into a store of its own (nothing is reused; the
store's tables are created before the clock starts, as a user's store already has them):

- `one`: `xp train digits seed=1` (one process: imports, setup, training, the record);
- `warm`: `xp repeat digits --seeds 8 --jobs 2` (two warm workers, four seeds each);
- `process`: the same repeat with `--executor process` (a new process per seed).

For each it prints the wall time, the wall per seed (wall / seeds), the training time per seed
(the loop alone, from each run's `xp.time.fit_seconds` tag) and two fixed overheads per seed:
`overhead_per_seed` = wall per seed - training time per seed (the issue's measure: what a seed
adds to the wall beyond its training), and the stricter `core_overhead_per_seed` = (wall x jobs
- training) / seeds (what a seed costs on its core beyond its training: with 2 jobs, a core-second
of startup or report counts whole, not halved). And the ratio the targets are stated in:
`repeat of 8 (warm) / one train`.

    .venv/bin/python benchmarks/seed_throughput.py --rounds 3

Run at the repo root after `make data`, on a quiet machine; prints JSON (also
benchmarks/results/seed_throughput.json).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BIN = Path(sys.executable).parent


def arms(seeds: int, jobs: int, overrides: list[str]) -> dict[str, tuple[list[str], int]]:
    """name -> (command, jobs)"""
    repeat = ["xp", "repeat", "digits", *overrides, "--seeds", str(seeds), "--jobs", str(jobs)]
    return {
        "one": (["xp", "train", "digits", "seed=1", *overrides], 1),
        "warm": (repeat, jobs),
        "process": ([*repeat, "--executor", "process"], jobs),
    }


def one(command: list[str], jobs: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="xp-bench-") as store:
        uri = f"sqlite:///{store}/mlflow.db"
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": f"{BIN}:{os.environ['PATH']}"}
        env.pop("MLFLOW_RUN_ID", None)
        # the store exists before the clock starts, as a user's does (creating its tables
        # takes seconds, once)
        subprocess.run([sys.executable, "-c", "import sys, mlflow; mlflow.MlflowClient("
                        "sys.argv[1]).search_experiments()", uri], check=True,
                       capture_output=True)  # fmt: skip
        started = time.perf_counter()
        subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
        wall = time.perf_counter() - started
        probe = (
            "import json, mlflow; rs = mlflow.search_runs(search_all_experiments=True, "
            "filter_string=\"tags.`xp.kind` = 'train'\", output_format='list'); "
            "print(json.dumps([float(r.data.tags['xp.time.fit_seconds']) for r in rs]))"
        )
        out = subprocess.run([sys.executable, "-c", probe], env=env, check=True,
                             capture_output=True, text=True)  # fmt: skip
    fits = json.loads(out.stdout)
    n = len(fits)
    return {"wall": wall, "seeds": n, "fit": sum(fits), "wall_per_seed": wall / n,
            "fit_per_seed": sum(fits) / n, "overhead_per_seed": (wall - sum(fits)) / n,
            "core_overhead_per_seed": (wall * jobs - sum(fits)) / n}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--arms", default="one,warm,process")
    ap.add_argument("overrides", nargs="*", help="config overrides for every arm")
    opts = ap.parse_args()
    from xp.record.numerics import cpu_model

    plan = {k: v for k, v in arms(opts.seeds, opts.jobs, opts.overrides).items()
            if k in opts.arms.split(",")}  # fmt: skip
    runs: dict[str, list[dict]] = {name: [] for name in plan}
    for r in range(opts.rounds):
        for name, (command, jobs) in plan.items():  # alternating: drift hits every arm alike
            runs[name].append(one(command, jobs))
            print(f"round {r + 1} {name}: {runs[name][-1]['wall']:.1f} s", file=sys.stderr)
    med = {name: {k: statistics.median(x[k] for x in v) for k in v[0]} for name, v in runs.items()}
    result: dict = {"cpu": cpu_model(), "cores": os.cpu_count(), "rounds": opts.rounds,
                    "seeds": opts.seeds, "jobs": opts.jobs, "overrides": opts.overrides,
                    "median": med, "all": runs}  # fmt: skip
    if "one" in med:
        for name in ("warm", "process"):
            if name in med:
                result[f"{name}_over_one"] = med[name]["wall"] / med["one"]["wall"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "seed_throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
