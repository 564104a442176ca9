"""The training monitor's noise and speed on digits: false alarms, detection delays, cost.

- false alarms: `--healthy` seeds (default 30) of the digits project as shipped, watched with the
  default rules; every event on them is a false alarm. Prints the seeds with any event, the
  events per seed and per 1,000 monitored steps.
- detection: the same project with an injected fault (`XP_FAULT_LR`), on `--faulty` seeds each
  (default 10): a `spike` is the LR times 100 for one step, a `divergence` the LR times 1,000
  from that step to the end (the run collapses to chance, a loss of about ln 5); both at step 60
  of 150. Milder faults are not faults here: digits' LR times 10 or 30 to the end trains a
  better model, and times 30 for one step leaves some seeds' loss where it was. Prints how many
  runs were caught, the delay from the fault's step to the first event (median, max), the kinds
  that came first, and the runs caught as a divergence (the `divergence` rule itself).
- cost: `--overhead` seeds (default 8) trained twice, with the monitor and the training-sample
  evaluation off and on (the defaults), alternating; prints the median paired ratio of the
  training loop's time (on / off).

Untracked runs (`track=False`: the monitor and its journal work the same), two at a time in
worker processes, one thread each. Run at the repo root after `make data`:

    .venv/bin/python benchmarks/monitor.py
    .venv/bin/python benchmarks/monitor.py --healthy 4 --faulty 2 --overhead 2   # a smoke run

Prints JSON (also benchmarks/results/monitor.json).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
FAULT_STEP = 60
FAULTS = {"spike": f"{FAULT_STEP}:100:1", "divergence": f"{FAULT_STEP}:1000:0"}
OFF = ["monitor.enabled=false", "eval.train_sample=0"]
KINDS = ("spike", "grad", "divergence", "stall")


def one(seed: int, fault: str | None, overrides: list[str]) -> dict:
    """Train digits seed `seed` untracked; returns its monitor events, steps and loop time."""
    from xp.config import load_config
    from xp.record.workspace import Workspace
    from xp.train.loop import train
    from xp.train.monitoring import FAULT_LR_ENV

    os.environ.pop(FAULT_LR_ENV, None)
    if fault:
        os.environ[FAULT_LR_ENV] = fault
    config = load_config("digits", [f"seed={seed}", "train.threads=1", *overrides],
                         ROOT / "projects")  # fmt: skip
    result = train(config, ROOT, track=False)
    run_dir = Workspace.of(ROOT).run_dir(result.run_id)
    journal = run_dir / "monitor" / "events.jsonl"
    events = [json.loads(x) for x in journal.read_text().splitlines()] if journal.exists() else []
    shutil.rmtree(run_dir, ignore_errors=True)
    return {"seed": seed, "fault": fault, "steps": result.steps, "outcome": result.outcome,
            "fit_seconds": result.fit_seconds,
            "events": [(e["kind"], e["step"]) for e in events]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--healthy", type=int, default=30)
    parser.add_argument("--faulty", type=int, default=10)
    parser.add_argument("--overhead", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()

    with ProcessPoolExecutor(args.jobs) as pool:
        healthy = list(pool.map(one, range(1, args.healthy + 1), [None] * args.healthy,
                                [[]] * args.healthy))  # fmt: skip
        faulty = {
            kind: list(
                pool.map(one, range(1, args.faulty + 1), [spec] * args.faulty, [[]] * args.faulty)
            )  # fmt: skip
            for kind, spec in FAULTS.items()
        }
        pairs = []
        for seed in range(101, 101 + args.overhead):  # (seeds of their own: a fresh pair)
            off, on = pool.map(one, [seed, seed], [None, None], [OFF, []])
            pairs.append(on["fit_seconds"] / off["fit_seconds"])

    steps = sum(r["steps"] for r in healthy)
    alarms = [e for r in healthy for e in r["events"]]
    out: dict = {
        "healthy": {
            "seeds": len(healthy),
            "seeds_with_events": [r["seed"] for r in healthy if r["events"]],
            "events": len(alarms),
            "events_by_kind": {
                k: sum(e[0] == k for e in alarms) for k in ("spike", "grad", "divergence", "stall")
            },  # fmt: skip
            "steps": steps,
            "events_per_1000_steps": 1000 * len(alarms) / max(steps, 1),
        },
        "detection": {},
        "overhead": {
            "pairs": len(pairs),
            "median_ratio_on_over_off": statistics.median(pairs) if pairs else None,
            "ratios": [round(x, 3) for x in pairs],
        },  # fmt: skip
    }
    for kind, runs in faulty.items():
        firsts = [[e for e in r["events"] if e[1] >= FAULT_STEP][:1] for r in runs]
        delays = [f[0][1] - FAULT_STEP for f in firsts if f]
        by_rule = {}
        for rule in KINDS:  # each rule on its own: runs it caught, its median delay
            own = [next((e[1] - FAULT_STEP for e in r["events"]
                         if e[0] == rule and e[1] >= FAULT_STEP), None) for r in runs]  # fmt: skip
            got = [d for d in own if d is not None]
            by_rule[rule] = {
                "caught": len(got),
                "delay_steps_median": statistics.median(got) if got else None,
            }
        out["detection"][kind] = {
            "fault": FAULTS[kind], "runs": len(runs), "caught": len(delays),
            "delay_steps_median": statistics.median(delays) if delays else None,
            "delay_steps_max": max(delays) if delays else None,
            "by_rule": by_rule,
            "events_before_fault": sum(e[1] < FAULT_STEP for r in runs for e in r["events"]),
            "outcomes": {o: sum(r["outcome"] == o for r in runs) for o in
                         sorted({r["outcome"] for r in runs})},
        }  # fmt: skip
    text = json.dumps(out, indent=1)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "monitor.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
