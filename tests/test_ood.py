"""More than one test set: `data.extra_tests` gives `test:<name>/<m>` on the kept checkpoint."""

import mlflow
import numpy as np
import pytest

from tests.test_train import cfg
from xp import XpError
from xp.config import ConfigError, config_hash, metric_key
from xp.train.loop import train


def test_extra_test_sets_are_measured_on_the_kept_model_and_versioned(repo):
    result = train(cfg(repo), repo)  # digits names two: shifted and noisy test images
    run = mlflow.get_run(result.run_id)
    metrics, tags = run.data.metrics, run.data.tags
    assert set(result.extra_tests) == {"shifted", "noisy"}
    for name in ("shifted", "noisy"):
        for m in ("loss", "accuracy", "f1"):
            assert metrics[f"test:{name}/{m}"] == result.extra_tests[name][m]
        assert len(tags[f"xp.data.test:{name}.md5"]) == 32
        assert tags[f"xp.data.test:{name}.dvc_status"] == "clean"
    # the same model on other inputs: each set its own figure, below the in-distribution one
    assert metrics["test:shifted/f1"] < metrics["test/f1"]
    assert len({metrics["test/f1"], metrics["test:shifted/f1"], metrics["test:noisy/f1"]}) == 3
    assert metric_key("test@shifted/f1") == "test:shifted/f1"  # the run schema's spelling
    assert metric_key("test/f1") == "test/f1"
    # another test set measures the model; it does not change what is trained
    assert config_hash(cfg(repo, "data.extra_tests={}")) == config_hash(cfg(repo))


def test_an_extra_test_set_the_model_cannot_answer_is_one_line_and_nothing_recorded(repo):
    np.savez(repo / "data" / "sevens.npz", X=np.zeros((4, 8, 8), np.float32), y=np.full(4, 7))
    bad = cfg(repo, "data.extra_tests={sevens: data/sevens.npz}")
    with pytest.raises(XpError, match="test:sevens has labels 7 that model.num_labels=5 cannot"):
        train(bad, repo)
    with pytest.raises(XpError, match=r"data/nowhere.npz.*(missing|does not exist)"):
        train(cfg(repo, "data.extra_tests={gone: data/nowhere.npz}"), repo)
    assert mlflow.search_runs(search_all_experiments=True).empty
    with pytest.raises(ConfigError, match="extra test set name 'a b'"):
        cfg(repo, "data.extra_tests={a b: data/sevens.npz}")
