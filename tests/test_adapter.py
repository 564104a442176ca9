"""LoRA through peft: adapters on a frozen base, the base's identity, the merge check, an
adapter-only logged model that loads on its base."""

import json

import mlflow
import pytest

from tests.conftest import merged
from tests.test_train import _kill_at
from xp import XpError
from xp.config import ConfigError, load_config
from xp.train.loop import train


def _lora(repo, tiny_bert, *extra: str):
    overrides = [f"model.name={tiny_bert}", "data.train_limit=64", "train.epochs=3",
                 "eval.every=2", "optim.lr=0.01", "train.checkpoint_every=null",
                 "model.adapter.r=4", *extra]  # fmt: skip
    return load_config("vader", merged(*overrides), repo / "projects")


def test_lora_trains_adapters_on_a_frozen_base_and_logs_the_adapter_alone(repo, tiny_bert):
    import shutil

    tiny_bert = shutil.copytree(tiny_bert, repo.parent / "base")  # (changed at the end)
    config = _lora(repo, tiny_bert)
    whole = train(config, repo)
    killed = train(config, repo, events=_kill_at(4))
    resumed = train(config, repo, resume=killed.run_id)
    assert resumed.test == whole.test  # adapters resume exactly like full weights
    run = mlflow.get_run(whole.run_id)
    tags, metrics = run.data.tags, run.data.metrics
    trainable, total = int(tags["xp.model.trainable_params"]), int(tags["xp.model.total_params"])
    assert 0 < trainable < total / 10
    shown = json.loads(tags["xp.adapter.config"])
    assert shown["r"] == 4 and shown["target_modules"] == ["query", "value"]  # peft's BERT default
    assert tags["xp.adapter.base_kind"] == "path" and tags["xp.adapter.base"] == str(tiny_bert)
    assert tags["xp.adapter.base_md5"] == tags["xp.data.backbone.md5"]
    assert tags["xp.adapter.merge_check"] == "ok" and metrics["adapter/merge_max_diff"] < 1e-4

    client = mlflow.MlflowClient()
    files = {a.path.rsplit("/", 1)[-1]: a.file_size
             for a in client.list_artifacts(whole.run_id, "model/artifacts/adapter")}  # fmt: skip
    assert {"adapter_model.safetensors", "adapter_config.json", "base.json"} <= set(files)
    assert "model.safetensors" not in files  # never the base's weights
    base_size = (tiny_bert / "model.safetensors").stat().st_size
    assert files["adapter_model.safetensors"] < base_size / 3

    model = mlflow.pyfunc.load_model(f"runs:/{whole.run_id}/model")
    import pandas as pd

    test = pd.read_csv(repo / "data/vader/test.csv", keep_default_na=False)
    answer = model.predict(test["text"].tolist())
    names = ["negative", "neutral", "positive"]
    accuracy = (answer["label"].map(names.index).to_numpy() == test["label"].to_numpy()).mean()
    assert accuracy == pytest.approx(metrics["test/accuracy"])  # the adapter on its base: the run

    config_file = tiny_bert / "config.json"  # the base changed under the adapter: refused
    config_file.write_text(config_file.read_text().replace('"hidden_act"', ' "hidden_act"'))
    with pytest.raises(Exception, match="is not the one this adapter was trained on"):
        mlflow.pyfunc.load_model(f"runs:/{whole.run_id}/model")


def test_a_merge_that_changes_the_outputs_fails_the_run(repo, tiny_bert, monkeypatch):
    from xp.train import adapter

    monkeypatch.setattr(adapter, "merge_check", lambda *a: 0.5)  # peft#2502, injected
    result = train(_lora(repo, tiny_bert), repo)
    assert result.status == "FAILED" and "merge check" in result.message
    assert "0.5 > eval.merge_tolerance=0.0001" in result.message
    assert mlflow.get_run(result.run_id).data.tags["xp.adapter.merge_check"] == "failed"


def test_adapter_settings_that_cannot_work_are_one_line_and_record_nothing(repo, tiny_bert):
    with pytest.raises(XpError, match="'nope' is not a module of .*its adaptable modules are "):
        train(_lora(repo, tiny_bert, "model.adapter.target_modules=[query, nope]"), repo)
    assert mlflow.search_runs(search_all_experiments=True).empty
    for bad, says in (("train.freeze_layers=1", "train.freeze_layers does not combine"),
                      ("model.reinit_layers=1", "model.reinit_layers does not combine"),
                      ("model.adapter.kind=ia3", "model.adapter.kind")):  # fmt: skip
        with pytest.raises(ConfigError, match=says):
            _lora(repo, tiny_bert, bad)
    with pytest.raises(ConfigError, match="model.adapter needs model.kind=hf"):
        load_config("digits", ["model.adapter.r=4"], repo / "projects")


def test_a_script_s_peft_model_is_recorded_the_way_xp_records_its_own(tiny_bert, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    from xp.train import adapter

    plain = AutoModelForSequenceClassification.from_pretrained(tiny_bert)
    seen = adapter.recorded(plain, tmp_path)
    assert seen["xp.model.trainable_params"] == seen["xp.model.total_params"]
    assert not any(k.startswith("xp.adapter.") for k in seen)

    lora = get_peft_model(plain, LoraConfig(task_type="SEQ_CLS", r=2, target_modules=["value"]))
    seen = adapter.recorded(lora, tmp_path)
    assert int(seen["xp.model.trainable_params"]) < int(seen["xp.model.total_params"]) / 10
    assert json.loads(seen["xp.adapter.config"])["target_modules"] == ["value"]
    assert seen["xp.adapter.base"] == str(tiny_bert) and seen["xp.adapter.base_kind"] == "path"
    assert seen["xp.adapter.base_md5"].endswith(".dir")
