"""Task metrics on top of scikit-learn, and the trivial baseline a run must beat."""

from __future__ import annotations

import numpy as np


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Accuracy and macro precision/recall/F1 (every class counts the same, however rare)."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average="macro", zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision": float(p),
        "recall": float(r),
        "f1": float(f),
    }


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Mean absolute error and root mean squared error."""
    from sklearn.metrics import mean_absolute_error, root_mean_squared_error

    return {
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "rmse": float(root_mean_squared_error(y_true, y_pred)),
    }


def task_metrics(task: str, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """The metrics of `task` (classification: class ids; regression: values)."""
    if task == "classification":
        return classification_metrics(y_true, y_pred)
    return regression_metrics(y_true, y_pred)


def trivial_baseline(
    task: str, y_train: np.ndarray, y_test: np.ndarray, num_labels: int | None = None
) -> dict[str, float]:
    """Metrics of the model that ignores its input: the majority class, or the training mean.

    A fine-tuned run that does no better than this has learned nothing.
    """
    if task == "classification":
        majority = np.bincount(y_train, minlength=num_labels or 0).argmax()
        y_pred = np.full_like(y_test, majority)
    else:
        y_pred = np.full(y_test.shape, float(np.mean(y_train)), dtype=np.float64)
    return task_metrics(task, y_test, y_pred)
