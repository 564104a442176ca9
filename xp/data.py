"""Read a project's data files into arrays and tensors; nothing about training.

Two formats: `npz` (arrays `X`, `y`; images or features) and `csv` (a text column and a label
column). Splits are fixed files made by a DVC stage, so every run of a config reads the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xp import XpError
from xp.config import Config, DataConfig

SPLITS = ("train", "validation", "test")


class DataError(XpError):
    """A data file that is missing or does not hold what the config says."""


@dataclass
class Split:
    """One split: `inputs` (array of features/images, or list of texts) and `targets`."""

    inputs: Any
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)


def split_paths(cfg: DataConfig) -> dict[str, str]:
    """Split name -> path as written in the config."""
    return {name: getattr(cfg, name) for name in SPLITS}


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


def load_splits(config: Config, root: Path) -> dict[str, Split]:
    """Read train/validation/test; `data.train_limit` keeps the first N training rows."""
    out = {
        name: load_split(root / path, config.data, config.task, name)
        for name, path in split_paths(config.data).items()
    }
    limit = config.data.train_limit
    if limit is not None:
        tr = out["train"]
        out["train"] = Split(tr.inputs[:limit], tr.targets[:limit])
    return out


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
