"""What `train.numerics=portable` costs: training steps per second against `native`.

Arms, alternating within each round (each a fresh process, since the kernels are chosen when torch
is imported): `native` with torch's default threads, `native` with one thread (the kernels'
cost alone), and `portable` (baseline kernels, one thread). Projects: digits (a small CNN) and
vader (MiniLM-L6, 22M parameters, a few steps). Tracking is off: the loop alone is timed.

    .venv/bin/python benchmarks/numerics_cost.py --rounds 3

Run at the repo root after `make data`; prints JSON (also benchmarks/results/numerics_cost.json).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

PROJECTS = {
    "digits": ["train.epochs=10", "eval.every=1000"],
    "vader": ["data.train_limit=256", "train.max_steps=16", "eval.every=1000"],
}
ARMS = {
    "native": [],
    "native_1_thread": ["train.threads=1"],
    "portable": ["train.numerics=portable"],
}

PROBE = """
import json, sys
from pathlib import Path
from xp.record import numerics
from xp.config import load_config
config = load_config(sys.argv[1], sys.argv[2:], Path("projects"))
numerics.apply(config.train.numerics)
from xp.train.loop import train
r = train(config, Path("."), track=False)
import torch
print(json.dumps({"steps": r.steps, "fit_seconds": r.fit_seconds, "test": r.test,
                  "threads": torch.get_num_threads(),
                  "capability": torch.backends.cpu.get_cpu_capability()}))
"""


def one(project: str, arm: str) -> dict:
    args = [sys.executable, "-c", PROBE, project, *PROJECTS[project], *ARMS[arm]]
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--projects", default="digits,vader")
    opts = ap.parse_args()
    from xp.record.numerics import cpu_model

    result: dict = {"cpu": cpu_model(), "cores": os.cpu_count(), "rounds": opts.rounds}
    for project in opts.projects.split(","):
        rates: dict[str, list[float]] = {arm: [] for arm in ARMS}
        tests: dict[str, dict] = {}
        for _ in range(opts.rounds):
            for arm in ARMS:  # alternating: drift of a shared machine hits every arm alike
                r = one(project, arm)
                rates[arm].append(r["steps"] / r["fit_seconds"])
                tests[arm] = {"test": r["test"], "threads": r["threads"],
                              "capability": r["capability"]}  # fmt: skip
        med = {arm: statistics.median(v) for arm, v in rates.items()}
        result[project] = {
            "steps_per_s_median": med,
            "steps_per_s_all": rates,
            "portable_over_native": med["portable"] / med["native"],
            "portable_over_native_1_thread": med["portable"] / med["native_1_thread"],
            "arms": tests,
            "same_result_native_vs_portable": tests["native"]["test"] == tests["portable"]["test"],
        }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "numerics_cost.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
