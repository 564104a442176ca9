"""Read a project's data files into arrays and tensors; nothing about training.

Two formats: `npz` (arrays `X`, `y`; images or features) and `csv` (a text column and a label
column). Splits are fixed files made by a DVC stage, so every run of a config reads the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xp import XpError, one_line
from xp.config import Config, DataConfig, split_paths


class DataError(XpError):
    """A data file that is missing or does not hold what the config says."""


@dataclass
class Split:
    """One split: `inputs` (array of features/images, or list of texts) and `targets`."""

    inputs: Any
    targets: np.ndarray
    fold: dict[str, Any] | None = None  # a fold's train split: what it is (xp/train/folds.py)

    def __len__(self) -> int:
        return len(self.targets)


def missing_message(name: str, path: str) -> str:
    """The one line that tells a user how to get a missing data file."""
    return (
        f"data file {path!r} ({name}) is missing: run `dvc repro` to build it, "
        "or `dvc pull` to fetch it"
    )


def load_split(path: Path, cfg: DataConfig, task: str, name: str = "data") -> Split:
    """Read one split file.

    Raises:
        DataError: the file is missing or lacks the expected columns/arrays.
    """
    if not path.exists():
        raise DataError(missing_message(name, str(path)))
    try:
        return _parse(path, cfg, task)
    except DataError:
        raise
    except Exception as e:  # truncated zip, bad CSV, text labels: the file is not what it says
        raise DataParseError(name, path, one_line(e)) from None


class DataParseError(DataError):
    """A data file that exists but cannot be read as its format."""

    def __init__(self, name: str, path: Path, reason: str, detail: str = ""):
        self.name, self.path, self.reason = name, path, reason
        super().__init__(f"data file {str(path)!r} ({name}) cannot be read ({reason}){detail}")


def _parse(path: Path, cfg: DataConfig, task: str) -> Split:
    target_dtype = np.int64 if task == "classification" else np.float32
    if cfg.format == "npz":
        with np.load(path) as z:
            if "X" not in z or "y" not in z:
                raise DataError(f"{path} must hold arrays 'X' and 'y'; found {sorted(z.files)}")
            return Split(z["X"].astype(np.float32), z["y"].astype(target_dtype))
    import pandas as pd

    df = pd.read_csv(path, keep_default_na=False)  # ":(" and "nan" are tokens, not missing
    for col in (cfg.text_column, cfg.label_column):
        if col not in df.columns:
            raise DataError(f"{path} has no column {col!r}; columns: {', '.join(df.columns)}")
    texts = [str(t) for t in df[cfg.text_column]]
    return Split(texts, df[cfg.label_column].to_numpy().astype(target_dtype))


def load_splits(
    config: Config, root: Path, versions: dict[str, dict[str, Any]] | None = None,
    split_seed: int | None = None,
) -> dict[str, Split]:  # fmt: skip
    """Read train/validation/test and the extra test sets (`test:<name>`: measured, never trained
    on); with `data.resplit`, train and validation become that fold of the two pooled (drawn from
    `split_seed`; `Split.fold` of train says which); `data.train_limit` keeps the first N
    training rows.

    Args:
        config: the validated config.
        root: the repository root.
        versions: DVC versions of the files (`provenance.data_versions`), to say in an error
            whether a file that cannot be read also differs from what DVC recorded.

    Raises:
        DataError: a file is missing or cannot be read.
    """
    out = {}
    for name, path in split_paths(config.data).items():
        try:
            out[name] = load_split(root / path, config.data, config.task, name)
        except DataParseError as e:
            hint = _dvc_hint((versions or {}).get(name))
            raise DataParseError(e.name, e.path, e.reason, hint) from None
    if config.data.resplit is not None:
        from xp.train import folds

        tr, va, info = folds.resplit(_pair(out["train"]), _pair(out["validation"]),
                                     config.data.resplit, split_seed or 0, config.task)  # fmt: skip
        out["train"], out["validation"] = Split(*tr, fold=info), Split(*va)
    limit = config.data.train_limit
    if limit is not None:
        tr = out["train"]
        out["train"] = Split(tr.inputs[:limit], tr.targets[:limit], tr.fold)
    if config.task == "classification":
        for name, split in out.items():
            _check_labels(name, split, config.model.num_labels)
    return out


def _pair(split: Split) -> tuple[Any, np.ndarray]:
    return split.inputs, split.targets


def first_fold(config: Config, root: Path, plan: dict[str, Any]) -> dict[str, Any]:
    """A repeat's folds checked against its data before anything is recorded: the files pooled
    and its first fold drawn as every run will draw it; returns that fold's `info`.

    Raises:
        DataError: a file is missing or unreadable.
        FoldError: the two cannot be pooled, or the data cannot hold the folds.
    """
    from xp.config.trainer import ResplitConfig
    from xp.train import folds

    d = config.data
    parts = [_pair(load_split(root / getattr(d, n), d, config.task, n))
             for n in ("train", "validation")]  # fmt: skip
    cfg = ResplitConfig(kind=plan["kind"], count=plan["count"], index=0)
    try:
        return folds.resplit(*parts, cfg, plan["seed"], config.task)[2]
    except folds.FoldError as e:
        raise folds.FoldError(str(e).replace("data.resplit", plan["option"])) from None


def extra_test_names(splits: dict[str, Any]) -> list[str]:
    """The extra test sets among `splits` (`test:<name>` keys), in config order."""
    return [name for name in splits if name.startswith("test:")]


def _check_labels(name: str, split: Split, num_labels: int) -> None:
    """Class labels the model can predict: 0 .. num_labels - 1.

    Raises:
        DataError: a label outside that range.
    """
    bad = np.unique(split.targets[(split.targets < 0) | (split.targets >= num_labels)])
    if len(bad):
        shown = ", ".join(str(v) for v in bad[:5]) + (", ..." if len(bad) > 5 else "")
        raise DataError(
            f"{name} has labels {shown} that model.num_labels={num_labels} cannot predict "
            f"(labels run 0..{num_labels - 1})"
        )


def to_tensors(split: Split, tokenizer: Any = None, max_length: int = 32) -> dict[str, Any]:
    """A split as tensors: `{"x": ...}` for arrays, tokenizer outputs for text, plus `labels`."""
    import torch

    if tokenizer is None:
        features = {"x": torch.as_tensor(np.asarray(split.inputs))}
    else:
        enc = tokenizer(
            list(split.inputs),
            padding="longest",
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        features = dict(enc)
    features["labels"] = torch.as_tensor(split.targets)
    return features


def take(features: dict[str, Any], index: Any) -> dict[str, Any]:
    """Rows `index` of every tensor in a feature dict (one batch)."""
    return {k: v[index] for k, v in features.items()}


def _dvc_hint(version: dict[str, Any] | None) -> str:
    """What DVC knows about a file that cannot be read, and how to get the recorded one back."""
    if not version:
        return ""
    md5, recorded = version.get("md5"), version.get("recorded_md5")
    if version.get("dvc_status") == "modified" and recorded:
        return (
            f"; its md5 is {md5} but DVC recorded {recorded}: run `dvc checkout "
            f"{version.get('output') or version['path']}` to restore it, or `dvc pull` to fetch it"
        )
    if version.get("dvc_status") == "clean":
        return f"; its md5 {md5} is the one DVC recorded: the data itself is malformed"
    return f"; md5 {md5}, not tracked by DVC: rebuild it (`dvc repro`) or fix the file"
