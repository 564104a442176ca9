"""Training-time augmentation: its own seed, a pure function of (seed, epoch, batch), exact on
resume, refused for the wrong input kind."""

import mlflow
import numpy as np
import pytest
import torch

from tests.test_train import _kill_at, cfg
from xp.config import ConfigError, config_hash
from xp.config.trainer import AugmentConfig
from xp.train.augment import Augmenter
from xp.train.loop import train

IMAGES = AugmentConfig(shift=0.125, rotate=10, noise=0.1)


def _digits(n: int = 16) -> dict:
    x = torch.as_tensor(np.random.default_rng(0).integers(0, 17, (n, 8, 8)), dtype=torch.float32)
    return {"x": x, "labels": torch.arange(n) % 5}


def test_image_augmentation_is_a_pure_function_of_seed_epoch_and_batch():
    batch = _digits()
    augment = Augmenter.build(IMAGES, 7, batch, None)
    before = torch.get_rng_state()
    a, again = augment(batch, 2, 3), augment(batch, 2, 3)
    assert torch.equal(torch.get_rng_state(), before)  # dropout's generator is never drawn from
    assert torch.equal(a["x"], again["x"]) and torch.equal(a["labels"], batch["labels"])
    assert a["x"].shape == batch["x"].shape and 0 <= a["x"].min() and a["x"].max() <= 16
    for other in (augment(batch, 2, 4), augment(batch, 3, 3),
                  Augmenter.build(IMAGES, 8, batch, None)(batch, 2, 3)):  # fmt: skip
        assert not torch.equal(a["x"], other["x"])
    moved = (a["x"] - batch["x"]).abs().flatten(1).mean(1)
    assert (moved > 0).all()  # every image drew its own transform
    off = Augmenter.build(AugmentConfig(), 7, batch, None)
    assert off(batch, 2, 3) is batch


def test_text_augmentation_touches_content_tokens_only_and_keeps_one(tiny_bert):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    batch = dict(tok(["good", "a truly wonderful day out", "bad :("], padding="longest",
                     return_tensors="pt"))  # fmt: skip
    special = torch.isin(batch["input_ids"], torch.as_tensor(tok.all_special_ids))
    masked = Augmenter.build(AugmentConfig(mask=0.5), 3, batch, tok)(batch, 0, 0)
    changed = masked["input_ids"] != batch["input_ids"]
    assert changed.any() and not (changed & special).any()
    assert (masked["input_ids"][changed] == tok.mask_token_id).all()

    deleted = Augmenter.build(AugmentConfig(delete=0.9), 3, batch, tok)(batch, 0, 0)
    kept = deleted["attention_mask"].sum(1)
    assert (kept < batch["attention_mask"].sum(1)).any() and (kept >= 3).all()  # CLS, 1, SEP
    for row, ids in enumerate(deleted["input_ids"]):
        live = ids[: kept[row]].tolist()
        assert live[0] == tok.cls_token_id and live[-1] == tok.sep_token_id
        assert set(ids[kept[row] :].tolist()) <= {tok.pad_token_id}
        original = batch["input_ids"][row][batch["attention_mask"][row].bool()].tolist()
        it = iter(original)
        assert all(t in it for t in live)  # what is left is in its original order
    again = Augmenter.build(AugmentConfig(delete=0.9), 3, batch, tok)(batch, 0, 0)
    assert torch.equal(again["input_ids"], deleted["input_ids"])


def test_an_augmented_run_records_its_seed_and_resumes_exactly(repo):
    on = ("augment.shift=0.125", "augment.rotate=10", "augment.noise=0.1")
    config = cfg(repo, "train.epochs=2", "eval.every=3", *on)
    whole = train(config, repo)
    killed = train(config, repo, events=_kill_at(7))
    resumed = train(config, repo, resume=killed.run_id)
    assert resumed.test == whole.test  # digit for digit: the draws after step 7 are the same
    params = mlflow.get_run(whole.run_id).data.params
    assert params["seed.augment"] == "1586522274" and params["augment.rotate"] == "10.0"
    plain = train(cfg(repo, "train.epochs=2", "eval.every=3"), repo, track=False)
    other = train(cfg(repo, "train.epochs=2", "eval.every=3", "seed.augment=5", *on), repo,
                  track=False)  # fmt: skip
    assert len({plain.test["loss"], whole.test["loss"], other.test["loss"]}) == 3


def test_augmentation_of_the_wrong_input_kind_is_one_line(repo, tiny_bert):
    with pytest.raises(ConfigError, match="augment.mask does not apply to model.kind=cnn"):
        cfg(repo, "augment.mask=0.1")
    with pytest.raises(ConfigError, match="augment.rotate does not apply to model.kind=hf"):
        cfg(repo, "augment.rotate=5", project="vader")
    with pytest.raises(ConfigError, match="augment.shift"):
        cfg(repo, "augment.shift=0.6")
    assert config_hash(cfg(repo, "augment.noise=0")) == config_hash(cfg(repo))
    assert config_hash(cfg(repo, "augment.noise=0.1")) != config_hash(cfg(repo))

    np.savez(repo / "data" / "flat.npz", X=np.zeros((40, 10), np.float32), y=np.arange(40) % 5)
    flat = cfg(repo, "data.train=data/flat.npz", "augment.noise=0.1")
    with pytest.raises(ConfigError, match=r"need images; the training inputs are \(40, 10\)"):
        train(flat, repo)
    assert mlflow.search_runs(search_all_experiments=True).empty  # nothing recorded
