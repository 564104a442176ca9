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
    .venv/bin/python benchmarks/seed_throughput.py --project vader_trainer \
        --arms one,warm,nofork max_steps=20 eval_steps=20 train_limit=640

The second is a script project's: 8 seeds of the HF Trainer script (20 steps each, so what a seed
costs beyond its training shows) on warm workers, whose seeds each run the script in a fork of
xp's process that imported ahead (`warm`), against the same with a new interpreter for each
script (`nofork`, `XP_SCRIPT_FORK=0`), against one `xp train` of it.

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


Arm = tuple[list[str], int, dict[str, str]]  # command, jobs, environment


def arms(project: str, seeds: int, jobs: int, overrides: list[str]) -> dict[str, Arm]:
    """name -> (command, jobs, environment)"""
    repeat = ["xp", "repeat", project, *overrides, "--seeds", str(seeds), "--jobs", str(jobs)]
    return {
        "one": (["xp", "train", project, "seed=1", *overrides], 1, {}),
        "warm": (repeat, jobs, {}),
        "process": ([*repeat, "--executor", "process"], jobs, {}),
        # a script project's seeds with a new interpreter for each script (no fork of xp's)
        "nofork": (repeat, jobs, {"XP_SCRIPT_FORK": "0"}),
    }


def one(command: list[str], jobs: int, extra_env: dict[str, str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="xp-bench-") as store:
        uri = f"sqlite:///{store}/mlflow.db"
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": f"{BIN}:{os.environ['PATH']}",
               **extra_env}  # fmt: skip
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
    ap.add_argument("--project", default="digits")
    ap.add_argument(
        "--arms",
        default="one,warm,process",
        help="of one, warm, process, nofork (a script project's seeds, each script in "
        "a new interpreter)",
    )
    ap.add_argument("overrides", nargs="*", help="config overrides for every arm")
    opts = ap.parse_args()
    from xp.record.numerics import cpu_model

    plan = {k: v for k, v in arms(opts.project, opts.seeds, opts.jobs, opts.overrides).items()
            if k in opts.arms.split(",")}  # fmt: skip
    runs: dict[str, list[dict]] = {name: [] for name in plan}
    for r in range(opts.rounds):
        for name, (command, jobs, extra) in plan.items():  # alternating: drift hits every arm
            runs[name].append(one(command, jobs, extra))
            print(f"round {r + 1} {name}: {runs[name][-1]['wall']:.1f} s", file=sys.stderr)
    med = {name: {k: statistics.median(x[k] for x in v) for k in v[0]} for name, v in runs.items()}
    result: dict = {"cpu": cpu_model(), "cores": os.cpu_count(), "rounds": opts.rounds,
                    "project": opts.project,
                    "seeds": opts.seeds, "jobs": opts.jobs, "overrides": opts.overrides,
                    "median": med, "all": runs}  # fmt: skip
    if "one" in med:
        for name in ("warm", "process", "nofork"):
            if name in med:
                result[f"{name}_over_one"] = med[name]["wall"] / med["one"]["wall"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = (
        "seed_throughput.json"
        if opts.project == "digits"
        else f"seed_throughput_{opts.project}.json"
    )
    (RESULTS / name).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
