"""What a trial of a search reads inside its training process: which Optuna trial it is (from
its environment, set by `xp search`), and the hook that reports each evaluation to that trial and
asks the pruner whether to stop.

The training loop is handed the hook (`train(..., should_stop=...)`); it never imports the search.
The search imports the names below to set them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

# how a trial's training process finds its Optuna trial (pruning), and its extra tags
STORAGE_ENV, STUDY_ENV, TRIAL_ENV, METRIC_ENV = (
    "XP_SEARCH_STORAGE", "XP_SEARCH_STUDY", "XP_SEARCH_TRIAL", "XP_SEARCH_METRIC",
)  # fmt: skip
TAGS_ENV, PRUNE_ENV = "XP_RUN_TAGS", "XP_SEARCH_PRUNE"
# all of them are read when a seed trains, not when its process starts (executors pass them so)
TRIAL_VARIABLES = (STORAGE_ENV, STUDY_ENV, TRIAL_ENV, METRIC_ENV, TAGS_ENV, PRUNE_ENV)
STARTUP_TRIALS = 4  # the median pruner judges nothing until this many trials finished


def make_pruner(prune: str) -> Any:
    """Optuna's pruner for `--prune` (the driver's and each trial's: Optuna does not store it)."""
    import optuna

    if prune == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=STARTUP_TRIALS)
    return optuna.pruners.NopPruner()


class Pruning:
    """Inside a trial's training process: report each evaluation to the trial, ask the pruner.

    `from_env()` is None outside a search (or with `--prune none`).
    """

    def __init__(self, storage: str, study: str, number: int, metric: str, prune: str) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        loaded = optuna.load_study(study_name=study, storage=storage, pruner=make_pruner(prune))
        trial_id = loaded._storage.get_trial_id_from_study_id_trial_number(loaded._study_id, number)
        self.trial = optuna.Trial(loaded, trial_id)
        self.metric = metric

    @classmethod
    def from_env(cls) -> Pruning | None:
        """The hook a search's trial process is asked for through its environment, or None."""
        if not os.environ.get(TRIAL_ENV):
            return None
        return cls(os.environ[STORAGE_ENV], os.environ[STUDY_ENV], int(os.environ[TRIAL_ENV]),
                   os.environ[METRIC_ENV], os.environ.get(PRUNE_ENV, "median"))  # fmt: skip

    def should_stop(self, step: int, val: dict[str, float]) -> bool:
        self.trial.report(val[self.metric], step)
        return self.trial.should_prune()


def hook_from_env() -> Callable[[int, dict[str, float]], bool] | None:
    """The `should_stop` hook of a search's trial process, or None outside a search. The trial is
    loaded when the run first asks, inside the run: a study storage that fails then ends the run
    FAILED under its study, as any error of a run does, and never before the run's own checks."""
    if not os.environ.get(TRIAL_ENV):
        return None
    loaded: list[Pruning | None] = []

    def should_stop(step: int, val: dict[str, float]) -> bool:
        if not loaded:
            loaded.append(Pruning.from_env())
        return loaded[0] is not None and loaded[0].should_stop(step, val)

    return should_stop
