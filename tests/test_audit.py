"""The data audit: exact counts on tiny hand-made splits, its cache per data version, and a
promotion refused for a model trained on a deliberately leaked copy of the digits data."""

from __future__ import annotations

import json
import shutil

import mlflow
import numpy as np
import pytest

from tests.conftest import FAST_DIGITS, git, parent_id_in, run
from xp.diagnose import audit
from xp.train.data import Split

TRAIN = ["Great movie", "awful plot", "great  MOVIE", "fine", "a wonderful experience", "meh"]
VALIDATION = ["okay", "Fine", "boring"]
TEST = ["AWFUL plot", "a wonderful experiences", "new words", "meh"]


def text_splits() -> dict[str, Split]:
    return {
        "train": Split(TRAIN, np.array([2, 0, 2, 1, 2, 0])),
        "validation": Split(VALIDATION, np.array([1, 1, 0])),
        "test": Split(TEST, np.array([0, 2, 1, 1])),
    }


def test_text_splits_are_audited_after_case_and_whitespace():
    found = audit.audit(text_splits(), "classification")
    shared = found["shared"]
    assert shared["test_in_train"]["count"] == 2  # "AWFUL plot", "meh"
    assert shared["test_in_train"]["examples"] == ["AWFUL plot", "meh"]
    assert found["leakage"] == pytest.approx(2 / 4)
    assert shared["validation_in_train"]["count"] == 1  # "Fine"
    assert shared["test_in_validation"]["count"] == 0
    assert found["splits"]["train"]["duplicates"] == 1  # "great  MOVIE"
    assert found["splits"]["train"]["classes"] == {"0": 2, "1": 1, "2": 3}
    assert found["imbalance_ratio"] == 3.0
    assert found["conflicting_labels"]["count"] == 1  # "meh": 0 in train, 1 in test
    near = found["near_duplicates"]["test_in_train"]
    assert near["count"] == 1 and near["examples"] == [["a wonderful experiences",
                                                        "a wonderful experience"]]  # fmt: skip
    assert found["findings"][0] == "2 test inputs (50.0%) are also in train"
    assert audit.warning(found).startswith("data audit: 2 test inputs (50.0%) are also in train "
                                           "(and ")  # fmt: skip
    tags = audit.tags(found)
    assert tags["xp.audit.leakage"] == "0.5" and tags["xp.audit.test_in_train"] == "2"
    assert tags["xp.audit.near_test_in_train"] == "1" and tags["xp.audit.conflicts"] == "1"


def test_images_are_compared_by_their_bytes_then_their_perceptual_hash():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = x.reshape(-1, 8, 8).astype(np.float32)
    splits = {"train": Split(x[:300], y[:300]), "validation": Split(x[300:400], y[300:400]),
              "test": Split(x[400:500], y[400:500])}  # fmt: skip
    clean = audit.audit(splits, "classification")
    assert clean["findings"] == [] and audit.warning(clean) is None and clean["leakage"] == 0
    copy, dimmer = x[3], x[7] * 0.8 + 1  # an exact copy; the same image, another exposure
    splits["test"] = Split(np.stack([x[400], copy, dimmer]), np.array([y[400], y[3], y[7]]))
    found = audit.audit(splits, "classification")
    assert found["shared"]["test_in_train"] == {"count": 1, "fraction": 1 / 3, "examples": [1]}
    near = found["near_duplicates"]["test_in_train"]
    assert near["count"] == 1 and near["examples"] == [[2, 7]]


def test_an_audit_is_made_once_per_data_version(tmp_path):
    key = audit.version_key(["md5a", "md5b", "md5c"], "classification", "csv")
    first = audit.cached_audit(tmp_path, key, text_splits(), "classification")
    cached = tmp_path / f"{key}.json"
    kept = json.loads(cached.read_text())
    kept["marker"] = "read from the cache"
    cached.write_text(json.dumps(kept))
    again = audit.cached_audit(tmp_path, key, text_splits(), "classification")
    assert again["marker"] == "read from the cache" and again["shared"] == first["shared"]
    other = audit.version_key(["md5a", "md5b", "md5X"], "classification", "csv")
    assert other != key and "marker" not in audit.cached_audit(tmp_path, other, text_splits(),
                                                               "classification")  # fmt: skip


def test_a_model_trained_on_a_leaked_copy_of_the_data_is_not_promoted(repo):
    """digits with 20 test images copied into its training split (a new DVC version, so the
    provenance is clean): every run says so at its start and records it; promotion is refused by
    the data_audit gate alone, and passes with --max-leakage above the leak."""
    leaky = repo / "data" / "leaky"
    leaky.mkdir()
    for split in ("validation", "test"):
        shutil.copy(repo / "data" / "digits" / f"{split}.npz", leaky / f"{split}.npz")
    with np.load(repo / "data" / "digits" / "train.npz") as tr, np.load(leaky / "test.npz") as te:
        np.savez(leaky / "train.npz", X=np.concatenate([tr["X"], te["X"][:20]]),
                 y=np.concatenate([tr["y"], te["y"][:20]]))  # fmt: skip
    run(["dvc", "add", "-q", "data/leaky"], repo)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "a leaked copy of digits")
    data = [f"data.{s}=data/leaky/{s}.npz" for s in ("train", "validation", "test")]
    proc = run(["xp", "repeat", "digits", *FAST_DIGITS, *data, "--seeds", "2", "--jobs", "2"],
               repo)  # fmt: skip
    assert "data audit: 20 test inputs (5.1%) are also in train" in proc.stdout + proc.stderr
    group = parent_id_in(proc.stdout)
    refused = run(["xp", "promote", group, "--name", "leaky", "--min-seeds", "2"], repo,
                  check=False)  # fmt: skip
    assert refused.returncode != 0
    assert ("refused by 1 gate(s): data_audit: 20 test inputs (5.1%) also in train (needs test "
            "inputs also in train <= 0.0%)") in refused.stderr  # fmt: skip
    run(["xp", "promote", group, "--name", "leaky", "--min-seeds", "2", "--max-leakage", "0.06"],
        repo)  # fmt: skip
    version = mlflow.MlflowClient().get_model_version_by_alias("leaky", "champion")
    seed = mlflow.get_run(version.tags["xp.run_id"])
    assert seed.data.tags["xp.audit.test_in_train"] == "20"
    files = [f.path for f in mlflow.MlflowClient().list_artifacts(seed.info.run_id, "audit")]
    assert files == ["audit/data_audit.json"]
