"""Error analysis, the first step of explaining a model: what it gets wrong, and how surely.

Per run, on the test set: the confusion matrix (scikit-learn's, over every class 0..K-1, so two
runs' matrices line up even where a class is never predicted), the errors per class, and the test
examples the model gets wrong, most confident wrong answer first: a confident mistake is either a
real blind spot or a mislabelled example, and both are worth a reader's look before a shy one.
Texts are quoted; images are drawn (`plot_images`), since a row of pixels says nothing in JSON.

Per repeat, over its seeds: the examples every seed gets wrong (hard, or mislabelled: no seed's
luck rescues them, so more seeds will not either) and those only some seeds get wrong (the seed
lottery: whether the run gets them right depends on the seed, which is part of why seeds differ).

Pure functions of arrays: numpy, scikit-learn and matplotlib (Agg, file only); no torch, no MLflow.
The JSON a run records under `errors/` is what `run_errors` returns.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

LIMIT = 50  # wrong examples kept per run (n_wrong counts them all)
MAX_IMAGES = 24  # drawn per figure
IMAGE_COLUMNS = 6
IMAGES_WIDTH = 8.0  # inches: a page's width
CONFUSION_WIDTH = 6.0
DPI = 100


def _is_text(inputs: Any) -> bool:
    if isinstance(inputs, np.ndarray):
        return inputs.dtype.kind in "OUS"
    return isinstance(inputs, (list, tuple)) and all(isinstance(x, str) for x in inputs)


def run_errors(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    probs: np.ndarray,
    inputs: Sequence[str] | np.ndarray | None,
    label_names: Sequence[str] | None = None,
    limit: int = LIMIT,
) -> dict[str, Any]:
    """The error analysis of one run on its test set.

    Args:
        y_true: the test labels, 0..K-1.
        y_pred: the model's predictions, 0..K-1.
        probs: the predicted probabilities, shape (n, K); K is the number of classes.
        inputs: the test inputs in the same order: a list of texts (quoted in `wrong`), or an array
            of images/features (not quoted: `input` is None; draw them with `plot_images`).
        label_names: K names; the default is "0".."K-1".
        limit: how many wrong examples to keep (the most confident first).

    Returns:
        A JSON-serialisable dict: `n` (test examples), `n_wrong` (all of them, whatever `limit`),
        `accuracy`, `labels` (K names), `confusion` (K x K list, rows the true class, columns the
        predicted one), `per_class` (one dict per class: `label` index, `name`, `n`, `wrong`,
        `error_rate`), `wrong` (at most `limit` dicts, most confident first, ties by index:
        `index` (row in the test set), `label`, `predicted`, `confidence` (the probability of the
        wrong answer), `input` (the text, or None)) and `limit`.
    """
    from sklearn.metrics import confusion_matrix

    probs = np.asarray(probs, dtype=np.float64)
    y_true = np.asarray(y_true, dtype=np.int64).reshape(-1)
    y_pred = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    if probs.ndim != 2 or not len(y_true) == len(y_pred) == len(probs):
        raise ValueError(
            f"y_true ({len(y_true)}), y_pred ({len(y_pred)}) and probs {probs.shape} must hold "
            "one row per test example, probs one column per class"
        )
    k = probs.shape[1]
    names = [str(i) for i in range(k)] if label_names is None else [str(x) for x in label_names]
    if len(names) != k:
        raise ValueError(f"{len(names)} label names for {k} classes")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if len(y) and (y.min() < 0 or y.max() >= k):
            raise ValueError(f"{name} holds classes outside 0..{k - 1} (probs has {k} columns)")
    if inputs is not None and len(inputs) != len(y_true):
        raise ValueError(f"{len(inputs)} inputs for {len(y_true)} test examples")
    matrix = confusion_matrix(y_true, y_pred, labels=list(range(k)))
    wrong = np.flatnonzero(y_true != y_pred)
    confidence = probs[wrong, y_pred[wrong]]
    order = wrong[np.argsort(-confidence, kind="stable")][: max(limit, 0)]
    text = inputs is not None and _is_text(inputs)
    examples = [
        {
            "index": int(i),
            "label": int(y_true[i]),
            "predicted": int(y_pred[i]),
            "confidence": float(probs[i, y_pred[i]]),
            "input": str(inputs[i]) if text else None,
        }
        for i in order
    ]
    per_class = []
    for c in range(k):
        n_c = int(matrix[c].sum())
        wrong_c = n_c - int(matrix[c, c])
        per_class.append({"label": c, "name": names[c], "n": n_c, "wrong": wrong_c,
                          "error_rate": wrong_c / n_c if n_c else None})  # fmt: skip
    n = len(y_true)
    return {
        "n": n,
        "n_wrong": len(wrong),
        "accuracy": (n - len(wrong)) / n if n else None,
        "labels": names,
        "confusion": matrix.astype(int).tolist(),
        "per_class": per_class,
        "wrong": examples,
        "limit": limit,
    }


def over_seeds(per_seed: dict[int, list[int]], n_test: int) -> dict[str, Any]:
    """Which test examples the seeds of a repeat get wrong: always (hard or mislabelled), or only
    sometimes (the seed lottery).

    Args:
        per_seed: for each seed with a record, the test indices it got wrong (all of them, not a
            capped list); seeds without a record are left out by the caller.
        n_test: the size of the test set.

    Returns:
        A JSON-serialisable dict: `seeds` (sorted), `n_seeds`, `n_test`; `always_wrong` (sorted
        indices every seed got wrong); `sometimes_wrong` (one dict per index some but not all
        seeds got wrong: `index`, `n_wrong` (seeds that got it wrong), `seeds` (which), the most
        often wrong first, ties by index); `n_always`, `n_sometimes`, `n_never` (examples no seed
        got wrong), and `share_always`, `share_sometimes`, `share_never` (of the test set).
    """
    seeds = sorted(per_seed)
    wrong_by: dict[int, list[int]] = {}
    for seed in seeds:
        for i in sorted({int(i) for i in per_seed[seed]}):
            if not 0 <= i < n_test:
                raise ValueError(f"seed {seed}: test index {i} outside 0..{n_test - 1}")
            wrong_by.setdefault(i, []).append(seed)
    counts = Counter({i: len(s) for i, s in wrong_by.items()})
    always = sorted(i for i, c in counts.items() if c == len(seeds))
    sometimes = [{"index": i, "n_wrong": c, "seeds": wrong_by[i]}
                 for i, c in sorted(counts.items(), key=lambda ic: (-ic[1], ic[0]))
                 if c < len(seeds)]  # fmt: skip
    never = n_test - len(counts)

    def share(x: int) -> float | None:
        return x / n_test if n_test else None

    return {
        "seeds": seeds,
        "n_seeds": len(seeds),
        "n_test": n_test,
        "always_wrong": always,
        "sometimes_wrong": sometimes,
        "n_always": len(always),
        "n_sometimes": len(sometimes),
        "n_never": never,
        "share_always": share(len(always)),
        "share_sometimes": share(len(sometimes)),
        "share_never": share(never),
    }


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (no display on a training machine)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _as_2d(image: Any) -> np.ndarray:
    """An image as a 2-D array: (1, H, W) and (H, W, 1) squeezed, a flat square row reshaped."""
    a = np.squeeze(np.asarray(image, dtype=np.float64))
    if a.ndim == 1:
        side = math.isqrt(a.size)
        if side * side != a.size:
            raise ValueError(f"a flat image of {a.size} values is not square")
        a = a.reshape(side, side)
    if a.ndim != 2:
        raise ValueError(f"an image must be 2-D; got shape {np.shape(image)}")
    return a


def plot_images(
    images: Sequence[Any] | np.ndarray,
    captions: Sequence[str],
    out_path: Path | str,
    title: str,
) -> Path:
    """A grid of images with their captions (e.g. "#12 label 7 -> 3 (0.91)") to a PNG.

    At most `MAX_IMAGES` (24) are drawn, the first ones (pass them most confident first), six to
    a row; the figure is at most 8 inches wide so it fits a page. Each image is 2-D (8x8 digits,
    or any size; a channel axis of 1 or a flat square row is accepted), drawn in grey, darkest
    where the value is highest. With no images the figure says so. Returns `out_path`.
    """
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images for {len(captions)} captions")
    plt = pyplot()
    n = min(len(images), MAX_IMAGES)
    cols = max(1, min(IMAGE_COLUMNS, n))
    rows = max(1, math.ceil(n / cols))
    cell = IMAGES_WIDTH / IMAGE_COLUMNS
    fig, axes = plt.subplots(rows, cols, figsize=(cell * cols, cell * rows + 0.4), squeeze=False)
    for j, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if j < n:
            ax.imshow(_as_2d(images[j]), cmap="gray_r", interpolation="nearest")
            ax.set_title(str(captions[j]), fontsize=7)
    if n == 0:
        axes[0, 0].text(0.5, 0.5, "(none)", ha="center", va="center", fontsize=9)
    fig.suptitle(title, fontsize=9)
    # a fixed layout: tight_layout measured every caption (~0.6 s a figure, of every run's toll)
    height = cell * rows + 0.4
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.45 / height,
                        wspace=0.15, hspace=0.35 / cell * 2)  # fmt: skip
    out = Path(out_path)
    fig.savefig(out, dpi=DPI)
    plt.close(fig)
    return out


def plot_confusion(
    matrix: Sequence[Sequence[int]] | np.ndarray, label_names: Sequence[str], out_path: Path | str
) -> Path:
    """The confusion matrix (rows the true class, columns the predicted one) to a PNG, drawn by
    scikit-learn's `ConfusionMatrixDisplay`, at most 6 inches wide. Returns `out_path`."""
    from sklearn.metrics import ConfusionMatrixDisplay

    plt = pyplot()
    m = np.asarray(matrix, dtype=np.int64)
    side = min(CONFUSION_WIDTH, 2.0 + 0.45 * len(label_names))
    fig, ax = plt.subplots(figsize=(side, side))
    display = ConfusionMatrixDisplay(confusion_matrix=m, display_labels=list(label_names))
    display.plot(ax=ax, cmap="Blues", colorbar=False, values_format="d")
    ax.set_title("confusion matrix (test)", fontsize=9)
    fig.tight_layout()
    out = Path(out_path)
    fig.savefig(out, dpi=DPI)
    plt.close(fig)
    return out
