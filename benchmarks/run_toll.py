"""A run's own toll: what `xp train digits` costs beyond its training loop and the imports it needs.

Run from the repo root (no GPU needed; on 2 CPU cores about 2 minutes with the default 5 rounds):

    .venv/bin/python benchmarks/run_toll.py [--rounds N] [--seed S] [--profile]

What it runs: whole processes, one after another, in three arms per round, the order alternating
from round to round (ABC, CBA, ...) after one untimed warm-up round (byte-code compiled, files in
the page cache), so drift from other processes on the machine hits every arm alike:

- `tracked`: `python -m xp.cli train digits seed=S` (what `xp train digits seed=S` runs), recording
  into a fresh SQLite store in a temporary folder (`MLFLOW_TRACKING_URI=sqlite:////tmp/.../mlflow.db`,
  its experiment made by this script with its artifacts in the same folder; never the repo's
  `mlflow.db` or `mlruns/`);
- `untracked`: the same command with `--no-track` (the null tracker: nothing recorded);
- `bare`: `python -c 'import torch, mlflow'`, the imports any tracked torch run pays;
- `bare_optimizer`: the same, then one `torch.optim.AdamW` made: torch's optimizers import
  `torch._dynamo` on first use (~1.5 s), which any torch training loop pays, xp's or not.

How to read the figures (JSON on stdout and in benchmarks/results/run_toll.json, a summary on
stderr), all medians over the rounds, in seconds of wall time of the whole process:

- `wall.tracked`, `wall.untracked`, `wall.bare`: each arm's process, start to exit.
- `fit`: the training loop alone, `xp.time.fit_seconds` read back from each tracked run (the
  untracked run's loop is the same loop with the null tracker; its fit is taken to be the same).
- `own.tracked` = wall.tracked - fit - wall.bare: xp's own time in a tracked run (config,
  provenance, data audit, the store, the test, errors, the model logged, ...); target <= 1.5 s.
  `own.untracked` likewise for `--no-track` (it subtracts the bare imports too, which an untracked
  run only partly pays, so it reads low). `own_beyond_torch.*` subtracts `wall.bare_optimizer`
  instead: what is left once torch's own first-use cost is counted as torch's.
- `ratio` = wall.tracked / wall.untracked: what tracking costs a digits run; target <= 1.2.
  `paired_ratio` is the median of the per-round ratios (the two ran seconds apart); when it
  disagrees with `ratio`, the machine was not quiet.
- `cpu`: each arm's CPU seconds (user + sys of the process itself, not of the metric writer it
  starts), a figure that a busy machine disturbs less than wall time.
- `runs`: every timed figure, round by round, and `spread` (max/min of an arm's walls): well
  above 1.1 means a noisy machine; use more rounds.

`--profile` runs one more tracked process under `python -X importtime` (the slowest imports, with
what imported them) and one in-process `xp.train.command.run` under cProfile (xp's functions by
cumulative time), printed on stderr and kept under `profile` in the JSON.

The temporary store, its artifacts and the runs' `.xp/runs/<id>` scratch folders are deleted at
the end: `git status` shows nothing new. It measures and reports; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "run_toll.json"
PROJECT = "digits"
TARGET_OWN_S = 1.5
TARGET_RATIO = 1.2
ARMS = ("tracked", "untracked", "bare", "bare_optimizer")
CPU: dict[str, list[float]] = {}  # each arm's process's CPU seconds (user + sys), run by run


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def child_env(uri: str) -> dict[str, str]:
    """The environment of every arm: the scratch store, nothing of a surrounding MLflow run."""
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri, PYTHONUNBUFFERED="1")
    for var in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(var, None)
    return env


def command(arm: str, seed: int) -> list[str]:
    if arm == "bare":
        return [sys.executable, "-c", "import torch, mlflow"]
    if arm == "bare_optimizer":
        code = "import torch, mlflow; torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])"
        return [sys.executable, "-c", code]
    cmd = [sys.executable, "-m", "xp.cli", "train", PROJECT, f"seed={seed}"]
    if XP_FROM:  # (the editable install's finder goes first, whatever sys.path says)
        cmd[1:3] = ["-c", FROM_CHILD, XP_FROM]
    return cmd + (["--no-track"] if arm == "untracked" else [])


XP_FROM: str | None = None  # --xp-from
FROM_CHILD = """import runpy, sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__]
sys.path.insert(0, sys.argv.pop(1))
runpy.run_module("xp.cli", run_name="__main__", alter_sys=True)
"""


def run_arm(arm: str, seed: int, env: dict[str, str], made: list[str]) -> tuple[float, str]:
    """One process of an arm: its wall seconds and run id (also put in `made`: its scratch)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command(arm, seed), cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.setdefault(arm, []).append(
        after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    )
    if done.returncode != 0:
        raise RuntimeError(f"{arm} exited {done.returncode}:\n{done.stdout[-2000:]}"
                           f"{done.stderr[-2000:]}")  # fmt: skip
    found = re.findall(r"\brun (\S+)\s*$", done.stdout, re.MULTILINE)
    made.extend(found[-1:])
    return wall, (found[-1] if found else "")


def fit_seconds(uri: str, run_id: str) -> float:
    import mlflow

    return float(mlflow.MlflowClient(uri).get_run(run_id).data.tags["xp.time.fit_seconds"])


def make_store(tmp: Path) -> str:
    """A fresh store with the project's experiment, its artifacts in `tmp` (not `./mlruns`)."""
    import mlflow

    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    client.create_experiment(PROJECT, artifact_location=(tmp / "artifacts").as_uri())
    return uri


def measure(rounds: int, seed: int, uri: str, made: list[str]) -> dict[str, list[float]]:
    env = child_env(uri)
    runs: dict[str, list[float]] = {a: [] for a in (*ARMS, "fit")}
    for r in range(-1, rounds):  # round -1: the warm-up, not kept
        order = ARMS if r % 2 == 0 else tuple(reversed(ARMS))
        walls, ids = {}, {}
        for arm in order:
            walls[arm], ids[arm] = run_arm(arm, seed, env, made)
        if r < 0:
            log(f"warm-up: {', '.join(f'{a} {w:.2f} s' for a, w in walls.items())}")
            continue
        for arm, wall in walls.items():
            runs[arm].append(wall)
        runs["fit"].append(fit_seconds(uri, ids["tracked"]))
        log(f"round {r + 1}/{rounds}: " + ", ".join(f"{a} {walls[a]:.2f} s" for a in ARMS)
            + f", fit {runs['fit'][-1]:.2f} s")  # fmt: skip
    return runs


def summarize(runs: dict[str, list[float]]) -> dict[str, Any]:
    med = {k: statistics.median(v) for k, v in runs.items()}
    own = {a: med[a] - med["fit"] - med["bare"] for a in ("tracked", "untracked")}
    beyond = {a: med[a] - med["fit"] - med["bare_optimizer"] for a in ("tracked", "untracked")}
    pairs = [t / u for t, u in zip(runs["tracked"], runs["untracked"], strict=True)]
    return {
        "wall": {a: round(med[a], 3) for a in ARMS},
        "fit": round(med["fit"], 3),
        "own": {a: round(v, 3) for a, v in own.items()},
        "own_beyond_torch": {a: round(v, 3) for a, v in beyond.items()},
        "ratio": round(med["tracked"] / med["untracked"], 3),
        "paired_ratio": round(statistics.median(pairs), 3),
        "spread": {a: round(max(runs[a]) / min(runs[a]), 3) for a in ARMS},
        "targets": {
            "own_tracked_max_s": TARGET_OWN_S,
            "own_tracked_met": own["tracked"] <= TARGET_OWN_S,
            "ratio_max": TARGET_RATIO,
            "ratio_met": med["tracked"] / med["untracked"] <= TARGET_RATIO,
        },
        "runs": {k: [round(x, 3) for x in v] for k, v in runs.items()},
        "cpu": {a: round(statistics.median(CPU[a][-len(runs[a]) :]), 3) for a in ARMS},
    }


# -- --profile ------------------------------------------------------------------------------------
def import_times(seed: int, env: dict[str, str], made: list[str], top: int = 25) -> list[dict]:
    """The slowest modules imported by a tracked run, each with the chain that imported it."""
    cmd = [sys.executable, "-X", "importtime", *command("tracked", seed)[1:]]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    found = re.findall(r"\brun (\S+)\s*$", done.stdout, re.MULTILINE)
    made.extend(found[-1:])
    rows = []  # (cumulative us, depth, module); a module's imports are listed before it
    for line in done.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if m:
            rows.append((int(m.group(1)), len(m.group(2)) // 2, m.group(3)))
    out = []
    for i, (us, depth, name) in enumerate(rows):
        if depth > 1:
            continue
        parents = [r[2] for r in rows[i + 1 :] if r[1] < depth][:1]
        out.append({"module": name, "cumulative_s": round(us / 1e6, 3), "under": parents})
    return sorted(out, key=lambda r: -r["cumulative_s"])[:top]


PROFILE_CHILD = """
import cProfile, pstats, io, sys
from xp.train import command
p = cProfile.Profile(); p.enable()
rc = command.run(sys.argv[1], sys.argv[2:-1])
p.disable()
s = io.StringIO(); pstats.Stats(p, stream=s).sort_stats('cumulative').print_stats(sys.argv[-1], 40)
print(s.getvalue()[-12000:], file=sys.stderr)
"""


def cprofile(seed: int, env: dict[str, str], made: list[str]) -> str:
    """xp's (and MLflow's model logging's) functions by cumulative time in one tracked run."""
    pattern = r"xp/|mlflow/(pyfunc|pytorch|models)/|dvc/repo/__init__"
    cmd = [sys.executable, "-c", PROFILE_CHILD, PROJECT, f"seed={seed}", pattern]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    made.extend(re.findall(r"\brun (\S+)\s*$", done.stdout, re.MULTILINE)[-1:])
    lines = [ln for ln in done.stderr.splitlines() if re.match(r"\s+\d+(/\d+)?\s+[\d.]", ln)]
    return "\n".join(ln.replace(str(REPO) + "/", "").replace(sys.prefix + "/", "")
                     for ln in lines)  # fmt: skip


def cleanup(run_ids: list[str]) -> None:
    for run_id in run_ids:
        shutil.rmtree(REPO / ".xp" / "runs" / run_id, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--seed", type=int, default=11, help="the digits run's seed (default 11)")
    parser.add_argument("--profile", action="store_true",
                        help="also profile one tracked run (-X importtime, cProfile)")  # fmt: skip
    parser.add_argument("--no-measure", dest="measure", action="store_false",
                        help="with --profile: profile only, no timed rounds")  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON")
    parser.add_argument("--xp-from", type=Path, default=None,
                        help="a folder holding another copy of the xp package (e.g. an older "
                        "one) that the xp arms import instead of this checkout's")  # fmt: skip
    args = parser.parse_args(argv)
    global XP_FROM
    XP_FROM = str(args.xp_from.resolve()) if args.xp_from else None

    tmp = Path(tempfile.mkdtemp(prefix="xp-run-toll-"))
    made: list[str] = []
    result: dict[str, Any] = {
        "benchmark": "run_toll",
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "torch": version("torch"),
            "mlflow": version("mlflow"),
        },
        "command": f"xp train {PROJECT} seed={args.seed}",
        "xp_from": str(args.xp_from) if args.xp_from else None,
        "rounds": args.rounds,
    }
    try:
        uri = make_store(tmp)
        if args.measure:
            result.update(summarize(measure(args.rounds, args.seed, uri, made)))
        if args.profile:
            env = child_env(uri)
            imports = import_times(args.seed, env, made)
            functions = cprofile(args.seed, env, made)
            result["profile"] = {"imports": imports, "functions": functions.splitlines()}
            log("slowest imports of a tracked run (cumulative s, imported under):")
            for row in imports:
                log(f"  {row['cumulative_s']:6.3f}  {row['module']}  <- {', '.join(row['under'])}")
            log("xp's functions by cumulative time (cProfile, one tracked run in-process):")
            log(functions)
    finally:
        cleanup(made)
        shutil.rmtree(tmp, ignore_errors=True)
    text = json.dumps(result, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    if "wall" in result:
        w, own = result["wall"], result["own"]
        log(f"{result['machine']['cpu']}, {result['machine']['cores']} cores, "
            f"{args.rounds} rounds, medians:")  # fmt: skip
        log(f"  wall: tracked {w['tracked']:.2f} s, untracked {w['untracked']:.2f} s, "
            f"bare imports {w['bare']:.2f} s; fit {result['fit']:.2f} s")  # fmt: skip
        log(f"  xp's own: tracked {own['tracked']:.2f} s (target <= {TARGET_OWN_S}), "
            f"untracked {own['untracked']:.2f} s; beyond torch's optimizer import: tracked "
            f"{result['own_beyond_torch']['tracked']:.2f} s (bare + optimizer "
            f"{w['bare_optimizer']:.2f} s)")  # fmt: skip
        c = result["cpu"]
        log(f"  cpu: tracked {c['tracked']:.2f} s, untracked {c['untracked']:.2f} s, "
            f"bare {c['bare']:.2f} s")  # fmt: skip
        log(f"  tracked/untracked: {result['ratio']:.3f} (paired {result['paired_ratio']:.3f}; "
            f"target <= {TARGET_RATIO})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
