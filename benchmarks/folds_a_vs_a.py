"""Folds x seeds on real runs: where the variance comes from, and how often the folds verdict says
`holds` for a configuration against itself (its false-positive rate).

Train one configuration over K folds and 2S seeds, then point this at the repeat:

    xp repeat digits --folds 5 --seeds 10 --jobs 2           # ~3 minutes on 2 cores (50 runs)
    .venv/bin/python benchmarks/folds_a_vs_a.py --repeat <repeat run id> [--arm 5]

It prints (JSON on stdout, a summary on stderr):

1. the variance decomposition (`xp.stats.variance_components`) of the metric over the K folds x
   the first S seeds, as `xp repeat --folds K --seeds S` reports it;
2. the A-vs-A: every way to deal the 2S seeds into two arms of S (C(2S, S) ordered splits, each
   arm on the same K folds) judged three ways, each at alpha = 0.05 one-sided:
   - `xp`: the folds verdict (`stats.compare_folds` + `stats.verdict`), what `xp repeat --folds
     --baseline` says: Welch over the seeds' means and the corrected resampled t-test paired by
     fold, both at alpha;
   - `corrected_folds_only`: the corrected resampled t-test paired by fold alone (Nadeau and
     Bengio, the seeds averaged within each fold);
   - `paired_naive`: the same pairing with a plain t-test over the folds' differences (folds
     taken as independent: what Nadeau and Bengio warn against);
   - `welch_runs`: Welch over the K x S runs of each arm as if every run were an independent
     draw (what a seeds-only tool would do with fold runs).
   A verdict that is right says `holds` in at most ~alpha of them.

The arms are deals of one set of seeds, so they are not independent of each other (each seed
is in half of them); the rate is the share of deals, the way README's seed check is counted.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys

from scipy import stats as sps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", required=True, help="a folds repeat run id (xp repeat --folds)")
    ap.add_argument("--arm", type=int, default=None, help="seeds per arm (default: half)")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--metric", default=None, help="default: the repeat's own")
    args = ap.parse_args()

    from xp import stats
    from xp.record import track
    from xp.repeat import recorded_seed_runs
    from xp.summary import split_ratio, successful_values

    parent = track.get_run(args.repeat)
    metric = args.metric or parent.data.tags["xp.metric"]
    runs, _ = recorded_seed_runs(parent)
    values = successful_values(runs, metric)
    seeds = sorted({s for _, s in values})
    folds = sorted({f for f, _ in values})
    arm = args.arm or len(seeds) // 2
    ratio = split_ratio(runs)
    first = {k: v for k, v in values.items() if k[1] in seeds[:arm]}
    vc = stats.variance_components(first)
    counts = {"xp": 0, "corrected_folds_only": 0, "paired_naive": 0, "welch_runs": 0}
    deals = list(itertools.combinations(seeds, arm))
    judged = 0
    for a_seeds in deals:
        b_seeds = [s for s in seeds if s not in a_seeds][:arm]
        a = {k: v for k, v in values.items() if k[1] in a_seeds}
        b = {k: v for k, v in values.items() if k[1] in b_seeds}
        cmp = stats.compare_folds(a, b, ratio, alpha=args.alpha)
        counts["xp"] += stats.verdict(cmp, args.alpha) == "holds"
        counts["corrected_folds_only"] += bool(cmp["corrected_t"]["p_value"] < args.alpha)
        ma, mb = stats.split_means(a), stats.split_means(b)
        d = [ma[f] - mb[f] for f in folds]
        p = sps.ttest_1samp(d, 0, alternative="greater").pvalue
        counts["paired_naive"] += bool(p < args.alpha)
        w = stats.welch_test(list(a.values()), list(b.values()), "greater")["p_value"]
        counts["welch_runs"] += bool(w < args.alpha)
        judged += 1
    out = {
        "repeat": args.repeat, "metric": metric, "folds": len(folds), "seeds": len(seeds),
        "arm": arm, "ratio": ratio, "alpha": args.alpha, "deals": judged,
        "variance_first_arm": vc,
        "holds_rate": {k: v / judged for k, v in counts.items()},
    }  # fmt: skip
    print(json.dumps(out, indent=1, default=str))
    share = vc.get("share", {})
    print(
        f"{metric} over {len(folds)} folds x {arm} seeds: variance seed {share.get('seed', 0):.0%}"
        f", split {share.get('split', 0):.0%}, residual {share.get('residual', 0):.0%} "
        f"({vc.get('advice', vc.get('error'))})\n"
        f"A-vs-A over {judged} deals of {len(seeds)} seeds into two arms of {arm}, P(holds) at "
        f"alpha {args.alpha}: xp {counts['xp'] / judged:.3f}, corrected t over folds alone "
        f"{counts['corrected_folds_only'] / judged:.3f}, paired plain t over folds "
        f"{counts['paired_naive'] / judged:.3f}, Welch over runs "
        f"{counts['welch_runs'] / judged:.3f}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
