"""What `xp search`'s driver costs per trial, from the first trial to the last: flat, or growing
with the trials already done.

One study of `--trials` trials (default 200) of digits trained for one optimizer step, `xp search
digits --jobs 1 --confirm-top 0` as a user runs it, in a scratch store of its own (a temporary
SQLite store, its artifacts and its Optuna storage beside it; the repo's `mlflow.db` is never
touched, and the `.xp/runs/<id>` folders of the scratch runs are removed at the end).

The driver runs in a Python that wraps `LocalExecutor.run` with a clock (nothing else changes):
each trial is one call (`--jobs 1`), so for trial k (counted from 1)

- `exec` = the time inside `executor.run`: the worker's fork and the trial's whole process (its
  setup, one training step, its test and record). This is the trial's own cost, the "training" the
  issue subtracts; it does not depend on the study's size;
- `driver` = the start of trial k's `executor.run` minus the end of trial k-1's: everything the
  driver itself does between two trials (reading trial k-1's runs, telling Optuna, asking for
  trial k, reading trial k's runs to plan it) = wall per trial - the trial's `exec`. Trial 1 has
  none (the study's setup comes before it) and is left out;
- for reference, from the store: each trial run's lifetime (`end_time - start_time`) and its loop
  (`xp.time.fit_seconds`), and `handoff` = `exec` - lifetime: what the trial's process costs
  outside its run (a worker started, its imports, provenance before the run opens, the exit).

How to read it: `driver.median_first` (trials 2-20) against `driver.median_last` (the last 20)
and `driver.slope_ms_per_trial` (a least-squares line through driver time against trial number):
a flat driver has equal medians and a slope near 0; a driver that searches every run of the study
per trial grows linearly per trial (quadratically in total), and its slope says by how much each
trial done adds to every later one. `exec` should be flat either way.

    .venv/bin/python benchmarks/search_driver.py              # 200 trials
    .venv/bin/python benchmarks/search_driver.py --trials 60  # quicker, for iteration

Run at the repo root after `make data`, on a quiet machine; prints JSON (also
benchmarks/results/search_driver.json) and a summary on stderr. It asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BIN = Path(sys.executable).parent

# the training that is as small as the trainer allows: one optimizer step, one evaluation, no
# forgetting measure, no training sample evaluated
ONE_STEP = ["train.epochs=1", "train.max_steps=1", "eval.every=1", "eval.patience=null",
            "eval.retention=null", "eval.train_sample=0"]  # fmt: skip

# the driver, as the `xp` console script runs it, with a clock around each `executor.run`
WRAPPED = """
import json, os, sys, time
from xp.execute import executor as ex
log = open(os.environ["XP_BENCH_EXEC_LOG"], "a")
original = ex.LocalExecutor.run
def run(self, jobs, on_event):
    started = time.perf_counter()
    try:
        return original(self, jobs, on_event)
    finally:
        log.write(json.dumps({"logs": [str(j.log) for j in jobs], "start": started,
                              "end": time.perf_counter()}) + "\\n")
        log.flush()
ex.LocalExecutor.run = run
from xp.cli import entry
entry()
"""


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _figures(numbers: list[int], values: list[float], first: int, last: int) -> dict:
    """Medians of the first and last trials' values (numbers counted from 1) and the slope."""
    import numpy as np

    early = [v for n, v in zip(numbers, values, strict=True) if n <= first]
    late = [v for n, v in zip(numbers, values, strict=True) if n > last - 20]
    slope = float(np.polyfit(numbers, values, 1)[0]) if len(values) > 1 else None
    return {"median_first": _median(early), "median_last": _median(late),
            "first": f"{min(numbers)}-{first}", "last": f"{last - 19}-{last}",
            "slope_ms_per_trial": None if slope is None else slope * 1000}  # fmt: skip


def study(trials: int, method: str, overrides: list[str]) -> dict:
    import mlflow

    with tempfile.TemporaryDirectory(prefix="xp-bench-search-") as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        client = mlflow.MlflowClient(uri)
        # the store and the project's experiment exist before the clock starts (artifacts in
        # the scratch folder, not the repo's mlruns/)
        client.create_experiment("digits", artifact_location=Path(tmp, "artifacts").as_uri())
        exec_log = Path(tmp, "exec.jsonl")
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "XP_BENCH_EXEC_LOG": str(exec_log),
               "PATH": f"{BIN}:{os.environ['PATH']}"}  # fmt: skip
        for key in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
            env.pop(key, None)
        args = ["search", "digits", *ONE_STEP, *overrides, "--trials", str(trials), "--jobs",
                "1", "--method", method, "--confirm-top", "0", "--storage",
                f"sqlite:///{tmp}/optuna.db"]  # fmt: skip
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", WRAPPED, *args], cwd=ROOT, env=env,
                              capture_output=True, text=True)  # fmt: skip
        wall = time.perf_counter() - started
        if proc.returncode:
            sys.exit(f"xp search failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        calls = [json.loads(line) for line in exec_log.read_text().splitlines()]
        runs = client.search_runs([client.get_experiment_by_name("digits").experiment_id],
                                  max_results=50000)  # fmt: skip
        for r in runs:  # the scratch runs' local folders (logs, locks) under the repo's .xp/
            shutil.rmtree(ROOT / ".xp" / "runs" / r.info.run_id, ignore_errors=True)
    trial_runs = {int(r.data.tags["xp.trial"]): r for r in runs if "xp.trial" in r.data.tags}
    rows = []
    for i, call in enumerate(calls):
        (number,) = {int(m) for log in call["logs"] for m in re.findall(r"trial-(\d+)-seed", log)}
        run = trial_runs[number]
        rows.append({
            "trial": number + 1,
            "exec": call["end"] - call["start"],
            "driver": call["start"] - calls[i - 1]["end"] if i else None,
            "run_lifetime": (run.info.end_time - run.info.start_time) / 1000,
            "fit": float(run.data.tags.get("xp.time.fit_seconds", "nan")),
        })  # fmt: skip
    return {"wall": wall, "command": " ".join(["xp", *args[:-2]]), "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--method", default="tpe", help="the search's sampler (xp search's default)")
    ap.add_argument("--out", default=str(RESULTS / "search_driver.json"))
    ap.add_argument("overrides", nargs="*", help="config overrides added to the one-step ones")
    opts = ap.parse_args()
    from xp.record.numerics import cpu_model

    got = study(opts.trials, opts.method, opts.overrides)
    rows = got["rows"]
    first = min(20, opts.trials)
    figures = {}
    for r in rows:
        r["handoff"] = r["exec"] - r["run_lifetime"]
    for key in ("driver", "exec", "handoff", "run_lifetime", "fit"):
        kept = [r for r in rows if r[key] is not None]
        figures[key] = _figures([r["trial"] for r in kept], [r[key] for r in kept], first,
                                opts.trials)  # fmt: skip
    result = {"cpu": cpu_model(), "cores": os.cpu_count(), "trials": opts.trials,
              "method": opts.method, "command": got["command"], "wall": got["wall"],
              "wall_per_trial": got["wall"] / opts.trials, **figures,
              "per_trial": rows}  # fmt: skip
    out = Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    d, e = figures["driver"], figures["exec"]
    print(f"{result['cpu']}, {result['cores']} cores: {opts.trials} trials in "
          f"{got['wall']:.0f} s ({result['wall_per_trial']:.2f} s a trial)\n"
          f"driver per trial: {d['median_first'] * 1000:.0f} ms (trials {d['first']}) -> "
          f"{d['median_last'] * 1000:.0f} ms (trials {d['last']}), slope "
          f"{d['slope_ms_per_trial']:.2f} ms per trial done\n"
          f"exec per trial (the trial's process): {e['median_first']:.2f} s -> "
          f"{e['median_last']:.2f} s, slope {e['slope_ms_per_trial']:.2f} ms per trial",
          file=sys.stderr)  # fmt: skip


if __name__ == "__main__":
    main()
