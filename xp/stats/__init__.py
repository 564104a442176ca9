"""Statistics for per-seed scores: does a fine-tuning result hold against a baseline?

Every function takes 1-D arrays of per-seed scores (one number per training run). The seed is the
unit of replication: evaluation examples within one run are not independent replicates of the
training procedure, so the spread we test against is the spread across seeds, and the sample size
is the number of seeds (typically 3-10).

What is used, and its limits:

- Intervals for a mean default to the Student-t interval (`t_interval`). Bootstrap intervals
  (`bootstrap_interval`, percentile or BCa) make fewer assumptions but under-cover below ~10
  seeds: with 3-5 seeds a nominal 95% bootstrap interval contains the truth noticeably less
  often, because the resamples can only reuse the few values seen. The t interval assumes
  roughly normal seed-to-seed noise, which is usually the better bet at these sizes.
- Two arms are compared with Welch's t-test (`welch_test`), which does not assume equal
  variances. The rank test (`mann_whitney`) drops the normality assumption but has a floor on its
  p-value: with n_a vs n_b seeds it can never go below 1 / C(n_a + n_b, n_a) (one-sided), so 3 vs
  3 seeds can never give p < 0.05 (`min_rank_p`). Read a non-significant rank test on few seeds
  in that light.
- `prob_improvement` (P(A > B), ties counted 1/2) and `expected_max` (Dodge et al. 2019, the
  expected best score over k tries) describe effect sizes and budgets; they are not tests.
- When several comparisons are made (several metrics or candidates), `holm` adjusts the p-values
  so that the chance of any false "holds" stays below alpha (family-wise error), without
  assuming independence between the tests.
- `seeds_needed` / `power_of` are power analyses for a two-sample t-test. Fed with an observed
  difference they are a planning hint ("how many seeds would make this conclusive"), not
  evidence: the observed difference is itself noisy.
- `tost` (equivalence): two one-sided Welch tests of "the two means are within a margin": how a
  re-run on other kernels (another CPU, a GPU) is judged when bits cannot match; its `bound` is
  the tightest margin the seeds support, and `resolvable_margin` the margin a given number of
  seeds can pass a perfect re-run at (80% of the time): a reproduction's default.
- Over folds x seeds (`xp repeat --folds`): `variance_components` (seed, split, residual: a
  crossed random-effects model), and `compare_folds`, paired by fold with the corrected
  resampled t-test (`corrected_t`, Nadeau and Bengio 2003): folds share their training rows, so
  a t-test treating them as independent is far too confident.
- `compare` collects all of the above for "candidate A vs baseline B" with the metric's direction
  handled, and `verdict` turns it into "holds" / "does_not_hold" / "inconclusive".

Pure numpy/scipy/statsmodels: no I/O, no logging. Every random function takes
`rng: np.random.Generator | int | None` and uses it (and only it), so a given seed reproduces.
"""

from xp.stats.equivalence import resolvable_margin, tost
from xp.stats.folds import (
    compare_folds,
    corrected_t,
    folds_interval,
    seed_means,
    split_means,
    variance_components,
)
from xp.stats.one_arm import bootstrap_interval, describe, t_interval
from xp.stats.planning import (
    expected_max,
    expected_max_band,
    expected_max_unbiased,
    power_of,
    seeds_needed,
)
from xp.stats.two_arms import holm, mann_whitney, min_rank_p, prob_improvement, welch_test
from xp.stats.verdict import compare, test_of, verdict

__all__ = [
    "bootstrap_interval", "compare", "compare_folds", "corrected_t",
    "describe", "folds_interval", "expected_max", "expected_max_band",
    "expected_max_unbiased", "holm", "mann_whitney", "min_rank_p", "power_of",
    "prob_improvement", "resolvable_margin", "seed_means", "seeds_needed", "split_means",
    "t_interval", "test_of", "tost", "verdict",
    "variance_components", "welch_test",
]  # fmt: skip
