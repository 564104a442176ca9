"""kill -9 at random moments, resume, and compare with a run never interrupted.

Each trial starts `xp train digits` (100 steps, an evaluation and a checkpoint every 5 steps),
waits until the run exists, sends SIGKILL after a random delay drawn over the rest of an
uninterrupted run's wall time (so kills land in training, evaluation, checkpointing, testing and
model logging alike), then runs `xp train digits --resume <run id>` and compares with a
reference run of the same seed: every point of every metric (same steps, same values, nothing
missing, nothing twice) and the final metrics, bit for bit.

    .venv/bin/python benchmarks/kill_trials.py --trials 20

Run at the repo root after `make data`; it uses a private store in benchmarks/results/ and prints
JSON (also written to benchmarks/results/kill_trials.json).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ARGS = ["digits", "train.epochs=10", "eval.every=5", "eval.patience=null",
        "train.checkpoint_every=5", "train.threads=1"]  # fmt: skip


def xp(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "xp.cli", "train", *args], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def run_id_of(line: str) -> str | None:
    parts = line.split()
    return parts[1] if len(parts) > 1 and parts[0] == "run" and len(parts[1]) == 32 else None


def start_and_wait_for_run(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    proc = xp(args, env)
    for line in proc.stdout:
        rid = run_id_of(line)
        if rid:
            return proc, rid
    raise RuntimeError(f"no run started: exit {proc.wait()}")


def history(run_id: str) -> tuple[dict, int]:
    """key -> sorted [(step, value)], and how many (key, step) points occur more than once."""
    from xp.record.track import metric_histories, repeated_points

    hist = metric_histories(run_id)
    return hist, repeated_points(hist)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20, help="kills that land inside a run")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    opts = ap.parse_args()
    store = RESULTS / "kill_store"
    shutil.rmtree(store, ignore_errors=True)
    store.mkdir(parents=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}",
           "NO_COLOR": "1"}  # fmt: skip
    os.environ.update(env)
    import mlflow

    from xp.record.numerics import cpu_model

    client = mlflow.MlflowClient()

    started = time.monotonic()
    proc, ref_id = start_and_wait_for_run(ARGS, env)
    after_start = time.monotonic()
    for line in proc.stdout:  # "ok run <id>" is printed once the run is FINISHED in the store
        if line.startswith("ok run "):
            break
    span = time.monotonic() - after_start  # from the run's start line to its end in the store
    proc.communicate()
    ref, _ = history(ref_id)
    ref_final = client.get_run(ref_id).data.metrics

    rng = random.Random(opts.seed)
    trials = []
    i = 0
    while sum(not t["finished_before_kill"] for t in trials) < opts.trials and i < 3 * opts.trials:
        i += 1  # a kill that lands after the run ended tests nothing: draw until N land inside
        delay = rng.uniform(0, span)
        proc, rid = start_and_wait_for_run(ARGS, env)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        killed_status = client.get_run(rid).info.status
        finished_first = killed_status == "FINISHED"  # the kill came after the record was whole
        points_before = sum(len(v) for v in history(rid)[0].values())
        resume = xp(["digits", "--resume", rid], env)
        out, _ = resume.communicate()
        hist, dup = history(rid)
        final = client.get_run(rid).data.metrics
        missing = sum(len(set(v) - set(hist.get(k, []))) for k, v in ref.items())
        extra = sum(len(set(v) - set(ref.get(k, []))) for k, v in hist.items())
        trial = {
            "trial": i, "kill_after_s": round(delay, 2), "finished_before_kill": finished_first,
            "status_after_kill": killed_status, "points_before_resume": points_before,
            "resume_exit": resume.returncode, "resumed_at_step":
                client.get_run(rid).data.tags.get("xp.resumed_at_step"),
            "final_equal": final == ref_final, "history_equal": hist == ref,
            "points_missing": missing, "points_extra": extra, "points_duplicated": dup,
            "status": client.get_run(rid).info.status,
        }  # fmt: skip
        if resume.returncode != 0:
            trial["resume_output"] = out.strip().splitlines()[-1:]
        trials.append(trial)
        print(json.dumps(trial), file=sys.stderr)
    resumable = [t for t in trials if not t["finished_before_kill"]]
    summary = {
        "kills": len(trials),
        "killed_mid_run": len(resumable),  # the others landed after the run had ended
        "resumed_ok": sum(t["resume_exit"] == 0 for t in resumable),
        "final_metrics_bitwise_equal": sum(t["final_equal"] for t in resumable),
        "histories_equal": sum(t["history_equal"] for t in resumable),
        "points_lost": sum(t["points_missing"] for t in resumable),
        "points_duplicated": sum(t["points_duplicated"] for t in resumable),
        "reference_points": sum(len(v) for v in ref.values()),
        "resumed_from_step_0": sum(t["resumed_at_step"] == "0" for t in resumable),
        "run_span_s": round(span, 2),
        "wall_s": round(time.monotonic() - started, 1),
        "cpu": cpu_model(),
        "per_trial": trials,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "kill_trials.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "per_trial"}, indent=2))


if __name__ == "__main__":
    main()
