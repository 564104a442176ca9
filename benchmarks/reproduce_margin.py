"""Can a statistical reproduction say yes? The default margin of `xp reproduce`, on real seeds.

Given a repeat run of one configuration with many successful seeds (30 here), it splits the seeds
`--splits` times (a fixed RNG) into two disjoint arms of 5 and of 10 seeds: the original and a
perfect reproduction of it (the same configuration, the same code, other seeds). On each split it
runs the TOST that `xp reproduce` runs (`xp.stats.tost`, alpha 0.05) at the margin
`xp reproduce` chooses without `--margin` (`xp.reproduce.default_margin`: what that many seeds
can resolve, from the original arm's sd), and again with the reproduction's values shifted by
that margin (up on even splits, down on odd ones: a real change as large as the margin).

    MLFLOW_TRACKING_URI=sqlite:///r.db xp repeat digits train.epochs=4 --seeds 30 --jobs 2
    MLFLOW_TRACKING_URI=sqlite:///r.db .venv/bin/python benchmarks/reproduce_margin.py \\
        --repeat <repeat run id> [--splits 1000] [--arms 5,10] [--seed 0]
    .venv/bin/python benchmarks/reproduce_margin.py --gaussian 2000 --arms 5   # fixed shifts

A few seconds on 2 cores (a few thousand TOSTs); the repeat takes a few minutes. The seeds'
values are read with xp's own readers (`recorded_seed_runs`, `successful_values`), the metric is
the repeat's own (`xp.metric`). Prints JSON (also benchmarks/results/reproduce_margin.json), a
summary on stderr. Per arm size, for the new default and for the old one (half the original
arm's sd), each a fraction of the splits:

- `equivalent`, `inconclusive`, `not_equivalent`: the verdicts on a perfect reproduction. The
  default's promise: `equivalent` >= 0.8 (it is designed for 0.8 on normal seeds).
- `shifted_equivalent`: `equivalent` although the reproduction moved by the margin. TOST's own
  promise: <= alpha (0.05).
- `median_margin`, `median_bound` (metric units): the margin used, and the equivalence bound (the
  tightest margin the seeds supported), medians over the splits; `median_margin_sd`: the margin
  in units of the original arm's sd.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def seed_values(repeat_id: str) -> tuple[str, np.ndarray]:
    """The repeat's metric and its successful seeds' values, as xp reads them."""
    from xp.record import track
    from xp.repeat import recorded_seed_runs
    from xp.summary import successful_values

    parent = track.get_run(repeat_id)
    metric = parent.data.tags.get("xp.metric", "test/f1")
    values = successful_values(recorded_seed_runs(parent)[0], metric)
    return metric, np.array([values[s] for s in sorted(values)])


def verdicts(values: np.ndarray, n: int, splits: int, seed: int) -> dict[str, dict]:
    """TOST on `splits` random disjoint n-vs-n splits, at the new default margin and the old."""
    from xp import stats
    from xp.reproduce import default_margin

    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {"default": [], "old (0.5 sd)": []}
    for i in range(splits):
        order = rng.permutation(values.size)
        a, b = values[order[:n]], values[order[n : 2 * n]]
        sd = float(np.std(a, ddof=1))
        sign = 1.0 if i % 2 == 0 else -1.0
        for name, margin in (("default", default_margin(list(a), n)),
                             ("old (0.5 sd)", max(0.5 * sd, 1e-4))):  # fmt: skip
            same = stats.tost(a, b, margin)
            moved = stats.tost(a, b + sign * margin, margin)
            rows[name].append((same["verdict"], moved["verdict"], margin, same["bound"], sd))
    out = {}
    for name, got in rows.items():
        same = [g[0] for g in got]
        out[name] = {
            "equivalent": same.count("equivalent") / splits,
            "inconclusive": same.count("inconclusive") / splits,
            "not_equivalent": same.count("not equivalent") / splits,
            "shifted_equivalent": [g[1] for g in got].count("equivalent") / splits,
            "median_margin": float(np.median([g[2] for g in got])),
            "median_bound": float(np.median([g[3] for g in got])),
            "median_margin_sd": float(np.median([g[2] / g[4] for g in got])),
        }
    return out


def fixed_shifts(n: int, draws: int, seed: int) -> dict[str, float]:
    """P(equivalent) at the default margin when the reproduction's true mean moved by a fixed
    0, 0.5, 1 or 2 sd (normal seeds, n vs n): what a margin the seeds resolve lets through."""
    from xp import stats
    from xp.reproduce import default_margin

    rng = np.random.default_rng(seed)
    out = {}
    for shift in (0.0, 0.5, 1.0, 2.0):
        hits = 0
        for _ in range(draws):
            a, b = rng.normal(0, 1, n), rng.normal(shift, 1, n)
            hits += stats.tost(a, b, default_margin(list(a), n))["verdict"] == "equivalent"
        out[f"{shift:g} sd"] = hits / draws
    return out


def main() -> None:
    from xp.record.numerics import cpu_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", help="a repeat run id (30 seeds or so)")
    parser.add_argument("--gaussian", type=int, default=0, metavar="DRAWS",
                        help="instead: normal seeds, P(equivalent) at fixed shifts")  # fmt: skip
    parser.add_argument("--splits", type=int, default=1000, help="random splits per arm size")
    parser.add_argument("--arms", default="5,10", help="seeds per arm, comma-separated")
    parser.add_argument("--seed", type=int, default=0, help="the splits' RNG seed")
    args = parser.parse_args()
    if args.gaussian:
        for n in (int(n) for n in args.arms.split(",")):
            got = fixed_shifts(n, args.gaussian, args.seed)
            print(
                f"{n} vs {n} normal seeds, {args.gaussian} draws, P(equivalent) at the default "
                "margin for a true shift of " + ", ".join(f"{k}: {v:.3f}" for k, v in got.items())
            )
        return
    if not args.repeat:
        parser.error("give --repeat <id> (or --gaussian DRAWS)")
    metric, values = seed_values(args.repeat)
    arms = [int(n) for n in args.arms.split(",")]
    if values.size < 2 * max(arms):
        sys.exit(f"error: repeat {args.repeat} has {values.size} successful seeds of {metric}; "
                 f"two disjoint arms of {max(arms)} need {2 * max(arms)}")  # fmt: skip
    result = {"repeat": args.repeat, "metric": metric, "seeds": int(values.size),
              "sd": float(np.std(values, ddof=1)), "mean": float(np.mean(values)),
              "splits": args.splits, "rng_seed": args.seed, "alpha": 0.05, "cpu": cpu_model(),
              "arms": {}}  # fmt: skip
    for n in arms:
        result["arms"][str(n)] = verdicts(values, n, args.splits, args.seed)
        for name, r in result["arms"][str(n)].items():
            print(f"{n} vs {n}, {name}: P(equivalent) {r['equivalent']:.3f}, inconclusive "
                  f"{r['inconclusive']:.3f}, not equivalent {r['not_equivalent']:.3f}; shifted by "
                  f"the margin: P(equivalent) {r['shifted_equivalent']:.3f}; median margin "
                  f"{r['median_margin']:.4f} ({r['median_margin_sd']:.2f} sd), median bound "
                  f"{r['median_bound']:.4f}", file=sys.stderr)  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "reproduce_margin.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
