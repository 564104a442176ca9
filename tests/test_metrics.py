import numpy as np
import pytest

from xp.train.metrics import classification_metrics, regression_metrics, trivial_baseline


def test_classification_metrics_by_hand():
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.array([0, 1, 1, 1, 2, 0])
    m = classification_metrics(y, p)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # per class precision: 0 -> 1/2, 1 -> 2/3, 2 -> 1/1 ; recall: 1/2, 1, 1/2
    assert m["precision"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert m["recall"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    f1 = [2 * p * r / (p + r) for p, r in ((1 / 2, 1 / 2), (2 / 3, 1), (1, 1 / 2))]
    assert m["f1"] == pytest.approx(sum(f1) / 3)


def test_regression_metrics_by_hand():
    m = regression_metrics(np.array([1.0, 2.0, 4.0]), np.array([1.0, 3.0, 2.0]))
    assert m["mae"] == pytest.approx(1.0)
    assert m["rmse"] == pytest.approx(np.sqrt(5 / 3))


def test_trivial_baseline_is_majority_class_or_training_mean():
    cls = trivial_baseline("classification", np.array([2, 2, 1]), np.array([2, 1, 1, 2]), 3)
    assert cls["accuracy"] == pytest.approx(0.5)
    reg = trivial_baseline("regression", np.array([1.0, 3.0]), np.array([2.0, 4.0]))
    assert reg["mae"] == pytest.approx(1.0)
