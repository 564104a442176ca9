"""Folds and resampled splits: train and validation pooled and split again, the test set fixed.

`data.resplit: {kind: kfold, count: K, index: i}` trains on the pool minus fold i and validates on
fold i; `kind: resample` draws a random split of the files' own sizes. Both are stratified by
class for classification (scikit-learn's `StratifiedKFold` / `StratifiedShuffleSplit`) and drawn
from `seed.split` alone, so every seed of `xp repeat --folds K` trains on the same K folds: the
seed and the split are crossed, which is what lets a repeat tell their variances apart.

The pool is the training file's rows then the validation file's, in file order. What a run
trained on is named by the md5 of its two index arrays (`xp.split.md5`): two runs with the same
md5 trained and validated on the same rows.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from xp import XpError

TAG = "xp.split."
MAX_SPLITS = 1000  # (ResplitConfig.count's bound)


class FoldError(XpError):
    """Splits that cannot be pooled, or folds the data cannot hold."""


def pool(train: Any, validation: Any) -> Any:
    """The two splits' inputs and targets as one: (inputs, targets).

    Raises:
        FoldError: the two files hold inputs of different shapes or kinds.
    """
    if isinstance(train, list) != isinstance(validation, list):
        raise FoldError("data.resplit: train and validation hold different kinds of inputs "
                        "(texts in one, arrays in the other): they cannot be pooled")  # fmt: skip
    if isinstance(train, list):
        return train + validation
    a, b = np.asarray(train), np.asarray(validation)
    if a.shape[1:] != b.shape[1:]:
        raise FoldError(f"data.resplit: train inputs are {a.shape[1:]} and validation inputs "
                        f"{b.shape[1:]}: they cannot be pooled")  # fmt: skip
    return np.concatenate([a, b])


def indices(
    targets: np.ndarray, n_validation: int, kind: str, count: int, index: int, seed: int,
    stratify: bool,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(train rows, validation rows) of the pool for fold/resample `index` of `count`.

    Raises:
        FoldError: more folds than rows, or a class too rare to stratify.
    """
    from sklearn.model_selection import KFold, ShuffleSplit, StratifiedKFold, StratifiedShuffleSplit

    n = len(targets)
    if kind == "kfold":
        if count > n:
            raise FoldError(f"--folds {count}: the pool has {n} rows")
        cls = StratifiedKFold if stratify else KFold
        splitter = cls(n_splits=count, shuffle=True, random_state=seed % 2**32)
    else:
        cls = StratifiedShuffleSplit if stratify else ShuffleSplit
        splitter = cls(n_splits=index + 1, test_size=n_validation, random_state=seed % 2**32)
    if stratify:
        counts = np.bincount(targets)
        fewest = int(counts[counts > 0].min())
        if kind == "kfold" and fewest < count:
            raise FoldError(
                f"--folds {count}: a class has {fewest} rows in train + validation, fewer than "
                "the folds: each fold could not hold every class; use fewer folds"
            )
    try:
        for i, (tr, va) in enumerate(splitter.split(np.zeros(n), targets if stratify else None)):
            if i == index:
                return np.sort(tr), np.sort(va)
    except ValueError as e:  # (a class with one row cannot be stratified)
        raise FoldError(f"data.resplit: {e}") from None
    raise AssertionError("unreachable: index < count")


def index_md5(train_rows: np.ndarray, validation_rows: np.ndarray) -> str:
    """The md5 that names a split of the pool: equal md5s, the same rows in each part."""
    h = hashlib.md5()
    for rows in (train_rows, validation_rows):
        h.update(np.asarray(rows, dtype="<i8").tobytes())
        h.update(b"|")
    return h.hexdigest()


def resplit(
    train: tuple[Any, np.ndarray], validation: tuple[Any, np.ndarray], cfg: Any, seed: int,
    task: str,
) -> tuple[tuple[Any, np.ndarray], tuple[Any, np.ndarray], dict[str, Any]]:  # fmt: skip
    """The fold's (inputs, targets) for train and validation from the files' two, and what it is.

    Returns:
        (train, validation, info) with info {"kind", "count", "index", "seed", "pool",
        "n_train", "n_validation", "md5"}.

    Raises:
        FoldError: the splits cannot be pooled, or the folds cannot be drawn.
    """
    inputs = pool(train[0], validation[0])
    targets = np.concatenate([train[1], validation[1]])
    tr, va = indices(targets, len(validation[1]), cfg.kind, cfg.count, cfg.index, seed,
                     task == "classification")  # fmt: skip

    def take(rows: np.ndarray) -> tuple[Any, np.ndarray]:
        part = [inputs[i] for i in rows] if isinstance(inputs, list) else inputs[rows]
        return part, targets[rows]

    info = {"kind": cfg.kind, "count": cfg.count, "index": cfg.index, "seed": seed,
            "pool": len(targets), "n_train": len(tr), "n_validation": len(va),
            "md5": index_md5(tr, va)}  # fmt: skip
    return take(tr), take(va), info


def tags(info: dict[str, Any] | None) -> dict[str, str]:
    """`xp.split.*`: the design (kind, count), this run's index and the md5 of its rows."""
    if not info:
        return {}
    return {f"{TAG}{k}": str(v) for k, v in info.items() if k != "seed"}


def design(kind: str, count: int, seed: int) -> str:
    """The name of a repeat's split design, shared by every run of it: `kfold5/seed 7`."""
    return f"{kind}{count}/seed {seed}"


def split_design(
    config: Any, overrides: list[str], folds: int | None, resamples: int | None,
    seed: int | None = None,
) -> dict[str, Any] | None:  # fmt: skip
    """`--folds K` / `--resamples N`: the design every run of the repeat shares, checked before
    anything is recorded (whether the data can hold it: `xp.train.data.first_fold`).

    Raises:
        FoldError: --folds 1, both options, --split-seed alone, a project whose splits
            cannot be pooled, or a data.resplit override (on any repeat).
    """
    if any(o.split("=", 1)[0].startswith("data.resplit") for o in overrides):
        raise FoldError(
            "a repeat's folds come from --folds or --resamples, not data.resplit overrides (a "
            "repeat of one fold would resume another fold's repeat: the fold is not the config)"
        )
    if folds is None and resamples is None:
        if seed is not None:
            raise FoldError(f"--split-seed {seed}: give --folds or --resamples with it")
        return None
    seed = 1 if seed is None else seed
    if folds is not None and resamples is not None:
        raise FoldError("--folds and --resamples are two designs of one thing: give one")
    kind, count = ("kfold", folds) if folds is not None else ("resample", resamples)
    option = "--folds" if kind == "kfold" else "--resamples"
    if count is not None and count > MAX_SPLITS:
        raise FoldError(f"{option} {count}: at most {MAX_SPLITS}")
    if count is None or count < 2:
        why = "one fold is no fold" if kind == "kfold" else "one resample shows no spread"
        raise FoldError(f"{option} {count}: give 2 or more ({why}; leave {option} out to train "
                          "on the files' own split)")  # fmt: skip
    if seed < 0:
        raise FoldError(f"--split-seed {seed}: give a seed >= 0")
    data = config.data
    if not hasattr(data, "resplit"):
        raise FoldError(
            f"{option}: project {config.project} is a script project: its script reads its own "
            "splits, which xp cannot pool and split again"
        )
    if not data.poolable:
        raise FoldError(
            f"{option}: project {config.project} keeps train and validation apart "
            "(data.poolable: false): its folds would mix what must stay apart"
        )
    return {"kind": kind, "count": count, "seed": seed, "option": option,
            "design": design(kind, count, seed)}  # fmt: skip


def design_overrides(plan: dict[str, Any] | None, fold: int | None) -> list[str]:
    """The `xp train` overrides of one run of a folds repeat: its fold and the shared split seed."""
    if plan is None or fold is None:
        return []
    return [f"data.resplit.kind={plan['kind']}", f"data.resplit.count={plan['count']}",
            f"data.resplit.index={fold}", f"seed.split={plan['seed']}"]  # fmt: skip
