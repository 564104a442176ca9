"""What does tracking cost? xp's MLflow tracking vs its null tracker, and vs HF Trainer + MLflow.

Run from the repo root (no GPU needed; on 2 CPU cores about 5 minutes by default, 1 with --quick,
10 with --repeats 8):

    .venv/bin/python benchmarks/tracking_overhead.py [--repeats N] [--threads T] [--quick]

What it measures (wall time of the training loop only; setup, test evaluation and model logging
are outside every timer):

1. digits (projects/digits, the small CNN): `xp.train.loop.train(..., track=True)` against
   `track=False` (the `--no-track` null tracker, same methods, records nothing). Time is
   `Result.fit_seconds`, which for a tracked run includes flushing the buffered metrics into the
   store, so "tracked" means "every metric is in the database when the clock stops".
2. a tiny random BERT (2 layers, hidden 32, MiniLM's tokenizer) on the VADER lexicon data, the
   same model, data, batch size and number of optimizer steps in six arms:
   - bare_loop: a plain PyTorch loop (AdamW, forward/backward/step, nothing logged): the floor;
   - xp_untracked / xp_tracked: xp's trainer with the null tracker / with MLflow;
   - hf_untracked / hf_mlflow: `transformers.Trainer` with `logging_steps=1` and `report_to=[]` /
     `report_to=["mlflow"]` (its MLflowCallback logs every step); only `trainer.train()` is timed,
     which also covers the callback creating its run and logging the TrainingArguments as params.
   - hf_xp: the same Trainer with `report_to=[]` and xp's `XpCallback` (what a script project's
     seed runs), reporting to a run made before the clock starts, as `xp train` hands a script
     its run; `trainer.train()` ends with the callback's flush, so every metric is in the store.

How to read the figures (JSON on stdout, same JSON in benchmarks/results/tracking_overhead.json,
a short summary on stderr):

- `*.arms.<arm>.median_s` is the median over `--repeats` timed repetitions; `runs_s` lists them
  all. The arms of one repetition run back to back, in alternating order (ABBA...), after one
  untimed full-length warm-up of every arm (the first runs in a process are slower), so drift
  from other processes on the machine hits all arms alike.
- `ratios["xp_tracked/xp_untracked"]` is the product promise: with a metric logged every step,
  tracking costs at most 5% wall time (ratio <= 1.05). `overhead_ms_per_step` is the same
  difference spread over the optimizer steps.
- `ratios["hf_xp/hf_untracked"]` is the callback's promise, the same as xp's trainer's (<= 1.05),
  against `["hf_mlflow/hf_untracked"]`, MLflowCallback's cost on the same Trainer in the same run.
- `ratios["hf_mlflow/bare_loop"]` and `["hf_mlflow/hf_untracked"]` are the comparison point:
  what Trainer's per-step MLflow logging costs on the same model; `["xp_tracked/bare_loop"]` is
  xp's whole loop (clipping, scheduling, the per-step `.item()`, tracking) against the floor.
- `paired_ratios` are medians of per-round ratios (the two arms ran seconds apart); when they
  disagree with the ratios of medians, the machine was not quiet and neither figure is firm.
- `outcomes` of the xp arms: the random tiny BERT does not beat the majority-class baseline in a
  few hundred steps, so xp marks those runs `failed`; that verdict comes after the timed loop.
- `metric_points` counts what actually reached the store in one tracked run, per metric key, so a
  fast arm cannot be fast by dropping metrics.

A figure is only as good as the machine was quiet: with `spread` (max/min of an arm's runs) well
above 1.1, re-run with more repeats. On a small shared VM the speed of the same loop can drift by
20% or more from one run to the next, so 3 repeats cannot resolve a 5% difference; trust the
paired ratios and use `--repeats 8` for a firm answer. Both tracked arms write to the same
temporary SQLite store, which xp puts in WAL mode (the Trainer arm profits from that too).

`--threads` (default 1) is the torch thread count of every arm. With 1, the second core is free
for whatever tracking runs beside the loop; `--threads 2` (all cores, what a config with
`train.threads: null` gets) shows what that background work costs when it has to share.

`--quick` is a smoke run: its loops last a second or two, so anything a tracked run pays once
before its metrics can land (e.g. starting a writer) weighs far more there than in real runs.

Everything MLflow writes goes to a temporary SQLite store and artifact folder, never the user's
`mlflow.db`; the script deletes them (and the `.xp/runs` scratch folders of its digits runs) at
the end. It measures and reports; it asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "tracking_overhead.json"
PROMISE_MAX_RATIO = 1.05
XP_EXPERIMENT = "xp-bench"
HF_EXPERIMENT = "hf-trainer-bench"
SEED = 1

# The tiny BERT's recipe, shared by every arm so they do the same arithmetic per step.
BERT_LR = 1e-4
BERT_WEIGHT_DECAY = 0.01
BERT_WARMUP = 0.06
BERT_BATCH = 32
BERT_MAX_LENGTH = 16
BERT_VAL_ROWS = 256  # xp evaluates once at the last step; a small split keeps that out of the way

# steps per arm: long enough that one-off costs are small against the loop (seconds, not ms)
DEFAULT = {"digits_epochs": 60, "digits_eval_every": 50, "bert_steps": 400}  # 600 + 400 steps
QUICK = {"digits_epochs": 15, "digits_eval_every": 50, "bert_steps": 100}  # 150 + 100 steps

if str(REPO) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(REPO))


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@contextlib.contextmanager
def env(**values: str | None) -> Iterator[None]:
    """Set (or, with None, unset) environment variables for a block, then restore them."""
    old = {k: os.environ.get(k) for k in values}
    try:
        _set_env(values)
        yield
    finally:
        _set_env(old)


def _set_env(values: dict[str, str | None]) -> None:
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def pkg_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


# -- timing harness -------------------------------------------------------------------------------
Arm = Callable[[], dict[str, Any]]  # one run -> {"seconds": ..., other facts}


def measure(arms: dict[str, Arm], repeats: int, threads: int) -> dict[str, dict[str, Any]]:
    """Warm every arm up once (untimed), then run `repeats` rounds in alternating order.

    Alternating (A B C, C B A, A B C, ...) spreads slow drift of the machine over all arms
    instead of charging it to whichever arm happens to run last.
    """
    import torch

    names = list(arms)
    for name in names:
        torch.set_num_threads(threads)  # any library may have changed it; every arm starts equal
        log(f"  warm-up {name} ...")
        arms[name]()
    out: dict[str, dict[str, Any]] = {n: {"runs_s": [], "facts": []} for n in names}
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            torch.set_num_threads(threads)
            facts = arms[name]()
            facts["threads_seen"] = torch.get_num_threads()
            out[name]["runs_s"].append(facts.pop("seconds"))
            out[name]["facts"].append(facts)
            log(f"  round {r + 1}/{repeats} {name:<13} {out[name]['runs_s'][-1]:7.3f} s")
    for name in names:
        runs = out[name]["runs_s"]
        out[name]["median_s"] = statistics.median(runs)
        out[name]["min_s"] = min(runs)
        out[name]["spread"] = max(runs) / min(runs)
    return out


def ratio(arms: dict[str, dict[str, Any]], a: str, b: str) -> float:
    """Ratio of the two arms' medians."""
    return arms[a]["median_s"] / arms[b]["median_s"]


def paired(arms: dict[str, dict[str, Any]], pairs: list[tuple[str, str]]) -> dict[str, float]:
    """Median over rounds of a/b within the same round (the two ran seconds apart)."""
    return {
        f"{a}/{b}": statistics.median(x / y for x, y in zip(arms[a]["runs_s"], arms[b]["runs_s"]))
        for a, b in pairs
    }


def metric_points(run_id: str) -> dict[str, int]:
    """Number of values per metric key that one run has in the store."""
    import mlflow

    client = mlflow.MlflowClient()
    keys = client.get_run(run_id).data.metrics
    return {k: len(client.get_metric_history(run_id, k)) for k in sorted(keys)}


def per_step_keys(points: dict[str, int], steps: int) -> list[str]:
    """The metric keys logged at every optimizer step."""
    return [k for k, n in points.items() if n >= steps]


# -- xp arms --------------------------------------------------------------------------------------
def xp_arm(project: str, root: Path, overrides: list[str], track: bool, made: list[str]) -> Arm:
    """One arm that runs `xp.train.loop.train` and reports `Result.fit_seconds`."""
    from xp.config import load_config
    from xp.train.loop import train

    cfg = load_config(project, overrides, root / "projects")

    def run() -> dict[str, Any]:
        started = time.perf_counter()
        with env(MLFLOW_EXPERIMENT_NAME=XP_EXPERIMENT, MLFLOW_EXPERIMENT_ID=None):
            result = train(cfg, root, track=track)
        made.append(result.run_id)
        return {"seconds": result.fit_seconds, "call_s": time.perf_counter() - started,
                "steps": result.steps, "run_id": result.run_id if track else None,
                "outcome": result.outcome}  # fmt: skip

    return run


def cleanup_scratch(root: Path, run_ids: list[str]) -> None:
    """Remove the `.xp/runs/<id>` folders (checkpoints) of the runs this script made."""
    for run_id in run_ids:
        path = root / ".xp" / "runs" / run_id
        if run_id and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


def bench_digits(repeats: int, threads: int, sizes: dict[str, int]) -> dict[str, Any]:
    """xp tracked vs untracked on the digits project, in the real repo root."""
    overrides = [
        f"train.epochs={sizes['digits_epochs']}", f"eval.every={sizes['digits_eval_every']}",
        "eval.patience=null",  # no early stop: every run does all its steps
        f"train.threads={threads}", "train.device=cpu",
    ]  # fmt: skip
    made: list[str] = []
    arms = {
        "xp_untracked": xp_arm("digits", REPO, overrides, False, made),
        "xp_tracked": xp_arm("digits", REPO, overrides, True, made),
    }
    try:
        res = measure(arms, repeats, threads)
    finally:
        cleanup_scratch(REPO, made)
    from xp.config import load_config

    steps = res["xp_tracked"]["facts"][0]["steps"]
    points = metric_points(res["xp_tracked"]["facts"][0]["run_id"])
    return {
        "overrides": overrides,
        "steps": steps,
        "batch_size": load_config("digits", overrides, REPO / "projects").train.batch_size,
        "metrics_per_step": len(per_step_keys(points, steps)),
        "metric_points": points,
        "arms": _arms_json(res),
        "ratios": {"xp_tracked/xp_untracked": ratio(res, "xp_tracked", "xp_untracked")},
        "paired_ratios": paired(res, [("xp_tracked", "xp_untracked")]),
        "overhead_ms_per_step": _per_step_ms(res, "xp_tracked", "xp_untracked", steps),
    }


# -- tiny BERT ------------------------------------------------------------------------------------
BERT_PROJECT = """\
# written by benchmarks/tracking_overhead.py: the tiny BERT on the VADER lexicon
task: classification
seed: {seed}
data:
  train: data/train.csv
  validation: data/validation.csv
  test: data/test.csv
  format: csv
  text_column: text
  label_column: label
  label_names: [negative, neutral, positive]
  max_length: {max_length}
model:
  kind: hf
  name: models/tinybert
  num_labels: 3
optim:
  lr: {lr}
  weight_decay: {wd}
  layer_decay: 1.0
schedule:
  warmup: {warmup}
  decay: linear
train:
  epochs: {epochs}
  max_steps: {steps}
  batch_size: {batch}
  grad_accum: 1
  clip_norm: 1.0
  freeze_embeddings: false   # train every parameter, as the bare loop and Trainer do
  precision: fp32
  deterministic: true
  device: cpu
  threads: {threads}
  checkpoint_every: null
eval:
  every: {steps}             # one evaluation, at the last step
  metric: f1
  patience: null
  batch_size: 256
"""


def make_bert_root(tmp: Path, steps: int, threads: int) -> Path:
    """A throw-away repo root: the tiny BERT, the VADER CSVs and a `tinybert` project."""
    import pandas as pd

    from xp.train.models import save_tiny_bert

    root = tmp / "bert-root"
    save_tiny_bert(root / "models" / "tinybert")
    (root / "data").mkdir(parents=True)
    for split in ("train", "validation", "test"):
        df = pd.read_csv(REPO / "data" / "vader" / f"{split}.csv", keep_default_na=False)
        if split != "train":
            df = df.head(BERT_VAL_ROWS)
        df.to_csv(root / "data" / f"{split}.csv", index=False)
    n_train = len(pd.read_csv(root / "data" / "train.csv", keep_default_na=False))
    per_epoch = -(-n_train // BERT_BATCH)
    (root / "projects" / "tinybert").mkdir(parents=True)
    (root / "projects" / "tinybert" / "config.yaml").write_text(BERT_PROJECT.format(
        seed=SEED, max_length=BERT_MAX_LENGTH, lr=BERT_LR, wd=BERT_WEIGHT_DECAY,
        warmup=BERT_WARMUP, epochs=-(-steps // per_epoch), steps=steps, batch=BERT_BATCH,
        threads=threads,
    ))  # fmt: skip
    return root


def bert_features(root: Path) -> dict[str, Any]:
    """The training split as xp tokenizes it (padded to the longest row, max_length 16)."""
    from transformers import AutoTokenizer

    from xp.config import load_config
    from xp.train.data import load_split, to_tensors

    cfg = load_config("tinybert", [], root / "projects")
    tokenizer = AutoTokenizer.from_pretrained(root / "models" / "tinybert")
    split = load_split(root / "data" / "train.csv", cfg.data, cfg.task, "train")
    return to_tensors(split, tokenizer, BERT_MAX_LENGTH)


def fresh_bert(root: Path) -> Any:
    """The tiny BERT with a new 3-class head drawn from the same seed every time."""
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(SEED)
    return AutoModelForSequenceClassification.from_pretrained(
        root / "models" / "tinybert", num_labels=3, ignore_mismatched_sizes=True
    )


def bare_arm(root: Path, feats: dict[str, Any], steps: int) -> Arm:
    """The floor: AdamW, forward, backward, step; no clipping, schedule, sync or logging."""
    import numpy as np
    import torch

    def run() -> dict[str, Any]:
        model = fresh_bert(root)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=BERT_LR, weight_decay=BERT_WEIGHT_DECAY)
        n = len(feats["labels"])
        rng = np.random.default_rng(SEED)
        done = 0
        started = time.perf_counter()
        while done < steps:
            order = torch.as_tensor(rng.permutation(n))
            for first in range(0, n, BERT_BATCH):
                batch = {k: v[order[first : first + BERT_BATCH]] for k, v in feats.items()}
                loss = model(**batch).loss
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                done += 1
                if done >= steps:
                    break
        return {"seconds": time.perf_counter() - started, "steps": done}

    return run


class _Rows:
    """A map-style dataset over a dict of equal-length tensors (what Trainer's collator wants)."""

    def __init__(self, feats: dict[str, Any]):
        self.feats = feats

    def __len__(self) -> int:
        return len(self.feats["labels"])

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {k: v[i] for k, v in self.feats.items()}


def hf_arm(root: Path, tmp: Path, feats: dict[str, Any], steps: int, report_to: list[str],
           xp_callback: bool = False) -> Arm:  # fmt: skip
    """HF Trainer, logging every step; `report_to=["mlflow"]` adds its MLflowCallback;
    `xp_callback` adds xp's `XpCallback` (with `report_to=[]`) reporting to a run of its own,
    made before the clock starts, as `xp train` hands a script its run."""
    from transformers import Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    dataset = _Rows(feats)

    def run() -> dict[str, Any]:
        import mlflow

        args = TrainingArguments(
            output_dir=str(tmp / "hf-out"),
            max_steps=steps,
            per_device_train_batch_size=BERT_BATCH,
            learning_rate=BERT_LR,
            weight_decay=BERT_WEIGHT_DECAY,
            warmup_steps=int(BERT_WARMUP * steps),
            lr_scheduler_type="linear",
            max_grad_norm=1.0,
            optim="adamw_torch",  # the same torch.optim.AdamW as xp and the bare loop
            logging_strategy="steps",
            logging_steps=1,
            save_strategy="no",
            eval_strategy="no",
            report_to=report_to,
            use_cpu=True,
            dataloader_num_workers=0,
            disable_tqdm=True,
            seed=SEED,
            run_name=f"hf-{'mlflow' if report_to else 'untracked'}",
        )
        trainer = Trainer(model=fresh_bert(root), args=args, train_dataset=dataset)
        xp_run = _xp_run(tmp) if xp_callback else None
        if xp_run is not None:
            from xp.integrations.hf import XpCallback

            trainer.add_callback(XpCallback(run=xp_run, log_model=False))
        # disable_tqdm swaps the progress bar for a print() of every log line; that is console
        # cost, not tracking cost, so both Trainer arms drop it
        trainer.remove_callback(PrinterCallback)
        with env(MLFLOW_EXPERIMENT_NAME=HF_EXPERIMENT, MLFLOW_EXPERIMENT_ID=None,
                 MLFLOW_RUN_ID=None):  # fmt: skip
            started = time.perf_counter()
            out = trainer.train()
            seconds = time.perf_counter() - started
        run_id = None
        if report_to:
            last = mlflow.last_active_run()
            run_id = last.info.run_id if last else None
        if xp_run is not None:
            run_id = xp_run.run_id
            xp_run._tracker.end("FINISHED")
        return {"seconds": seconds, "steps": out.global_step, "run_id": run_id}

    return run


def _xp_run(tmp: Path) -> Any:
    """A new run in the benchmark's store, as a script project's seed is handed one."""
    import mlflow

    from xp.integrations.run import Run
    from xp.record.handoff import Handoff
    from xp.record.track import MlflowTracker

    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(HF_EXPERIMENT)
    exp_id = exp.experiment_id if exp else client.create_experiment(HF_EXPERIMENT)
    run_id = client.create_run(exp_id, run_name="hf-xp-callback").info.run_id
    handoff = Handoff(run_id=run_id, project="tinybert", task="classification", metric="f1",
                      run_dir=tmp / "hf-xp" / run_id, seeds={"master": SEED})  # fmt: skip
    return Run(handoff, MlflowTracker(run_id))


def bench_bert(tmp: Path, repeats: int, threads: int, steps: int) -> dict[str, Any]:
    """Five arms on the tiny BERT: bare loop, xp (null / MLflow), Trainer (none / MLflow)."""
    log("  writing the tiny BERT and its project ...")
    root = make_bert_root(tmp, steps, threads)
    feats = bert_features(root)
    made: list[str] = []
    arms = {
        "bare_loop": bare_arm(root, feats, steps),
        "xp_untracked": xp_arm("tinybert", root, [], False, made),
        "xp_tracked": xp_arm("tinybert", root, [], True, made),
        "hf_untracked": hf_arm(root, tmp, feats, steps, []),
        "hf_mlflow": hf_arm(root, tmp, feats, steps, ["mlflow"]),
        "hf_xp": hf_arm(root, tmp, feats, steps, [], xp_callback=True),
    }
    res = measure(arms, repeats, threads)
    xp_run = res["xp_tracked"]["facts"][0]["run_id"]
    hf_run = res["hf_mlflow"]["facts"][0]["run_id"]
    xp_points = metric_points(xp_run)
    hf_points = metric_points(hf_run) if hf_run else {}
    hf_xp_points = metric_points(res["hf_xp"]["facts"][0]["run_id"])
    return {
        "model": "BertForSequenceClassification, 2 layers, hidden 32, MiniLM tokenizer, 3 labels",
        "data": "data/vader train split "
                f"({len(feats['labels'])} rows, padded to {feats['input_ids'].shape[1]} tokens)",
        "steps": steps,
        "batch_size": BERT_BATCH,
        "recipe": {"optimizer": "torch.optim.AdamW", "lr": BERT_LR,
                   "weight_decay": BERT_WEIGHT_DECAY, "warmup": BERT_WARMUP,
                   "schedule": "linear (xp, Trainer); none (bare loop)",
                   "clip_norm": "1.0 (xp, Trainer); none (bare loop)"},
        "metrics_per_step": {"xp_tracked": len(per_step_keys(xp_points, steps)),
                             "hf_mlflow": len(per_step_keys(hf_points, steps)),
                             "hf_xp": len(per_step_keys(hf_xp_points, steps))},
        "metric_points": {"xp_tracked": xp_points, "hf_mlflow": hf_points,
                          "hf_xp": hf_xp_points},
        "arms": _arms_json(res),
        "ratios": {
            "xp_tracked/xp_untracked": ratio(res, "xp_tracked", "xp_untracked"),
            "hf_mlflow/bare_loop": ratio(res, "hf_mlflow", "bare_loop"),
            "hf_mlflow/hf_untracked": ratio(res, "hf_mlflow", "hf_untracked"),
            "hf_xp/hf_untracked": ratio(res, "hf_xp", "hf_untracked"),
            "xp_tracked/bare_loop": ratio(res, "xp_tracked", "bare_loop"),
            "xp_untracked/bare_loop": ratio(res, "xp_untracked", "bare_loop"),
            "hf_untracked/bare_loop": ratio(res, "hf_untracked", "bare_loop"),
        },
        "paired_ratios": paired(res, [("xp_tracked", "xp_untracked"),
                                      ("hf_mlflow", "hf_untracked"), ("hf_mlflow", "bare_loop"),
                                      ("hf_xp", "hf_untracked")]),
        "overhead_ms_per_step": {
            "xp": _per_step_ms(res, "xp_tracked", "xp_untracked", steps),
            "hf": _per_step_ms(res, "hf_mlflow", "hf_untracked", steps),
            "hf_xp": _per_step_ms(res, "hf_xp", "hf_untracked", steps),
        },
    }  # fmt: skip


def _arms_json(res: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for name, r in res.items():
        entry = {"median_s": r["median_s"], "min_s": r["min_s"], "spread": r["spread"],
                 "runs_s": r["runs_s"], "steps": r["facts"][0]["steps"],
                 "threads_seen": sorted({f["threads_seen"] for f in r["facts"]})}  # fmt: skip
        if "call_s" in r["facts"][0]:  # the whole xp train() call: setup, test, model logging
            entry["train_call_median_s"] = statistics.median(f["call_s"] for f in r["facts"])
            entry["outcomes"] = sorted({f["outcome"] for f in r["facts"]})
        out[name] = entry
    return out


def _per_step_ms(res: dict[str, dict[str, Any]], a: str, b: str, steps: int) -> float:
    return (res[a]["median_s"] - res[b]["median_s"]) / steps * 1000


# -- main -----------------------------------------------------------------------------------------
def _quiet() -> None:
    """Keep stderr readable: library chatter is not what this script reports."""
    import mlflow  # noqa: F401  (its import sets its loggers' levels; ours must come after)
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    for name in ("mlflow", "alembic", "dvc"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def summary(result: dict[str, Any]) -> str:
    d, b = result["digits"], result["tinybert"]
    e = result["env"]
    lines = [f"tracking overhead ({result['mode']}, {result['repeats']} repeats, "
             f"{e['torch_threads']} torch thread(s), {e['cpu_count']} CPUs)",
             f"digits  ({d['steps']} steps, {d['metrics_per_step']} metrics/step):"]  # fmt: skip
    for name, arm in d["arms"].items():
        lines.append(f"  {name:<13} {arm['median_s']:7.3f} s  (spread {arm['spread']:.2f})")
    lines.append(
        f"  xp_tracked/xp_untracked = {d['ratios']['xp_tracked/xp_untracked']:.3f} "
        f"(paired {d['paired_ratios']['xp_tracked/xp_untracked']:.3f}; "
        f"{d['overhead_ms_per_step']:+.2f} ms/step; promise <= {PROMISE_MAX_RATIO})"
    )
    lines.append(f"tiny BERT ({b['steps']} steps, batch {b['batch_size']}):")
    for name, arm in b["arms"].items():
        lines.append(f"  {name:<13} {arm['median_s']:7.3f} s  (spread {arm['spread']:.2f})")
    for key, value in b["ratios"].items():
        pair = b["paired_ratios"].get(key)
        lines.append(f"  {key:<24} = {value:.3f}" + (f" (paired {pair:.3f})" if pair else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed repetitions per arm (default 3; 1 with --quick)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for every arm (default 1: the second core is left to "
        "MLflow's background writer)",
    )
    parser.add_argument("--quick", action="store_true", help="fewer steps: a ~1 minute smoke run")
    parser.add_argument(
        "--writer",
        choices=("process", "fork", "thread"),
        default="process",
        help="the metric writer of the xp arms: process (spawned, as by `xp train`), fork (forked "
        "from this process before it trains, as by a warm worker) or thread",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary store and tiny BERT root (path on stderr)",
    )
    args = parser.parse_args(argv)  # fmt: skip
    repeats = args.repeats or (1 if args.quick else 3)
    sizes = QUICK if args.quick else DEFAULT

    tmp = Path(tempfile.mkdtemp(prefix="xp-bench-"))
    # before xp or MLflow read them: a private store, no hub look-ups (model card, license)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for var in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        os.environ.pop(var, None)
    _quiet()
    import mlflow
    import torch

    from xp.record.metric_writer import start_writer, use_writer
    from xp.train.seed import set_deterministic

    use_writer(args.writer)
    if args.writer == "fork":  # as a warm worker does: before anything has run a thread
        start_writer()

    torch.set_num_threads(args.threads)
    # xp's configs ask for deterministic kernels and xp sets that process-wide; set it up front so
    # the bare loop and Trainer arms run under the same kernels as xp's
    set_deterministic(True)
    client = mlflow.MlflowClient()
    for name in (XP_EXPERIMENT, HF_EXPERIMENT):  # artifacts in the temp folder, not ./mlruns
        client.create_experiment(name, artifact_location=(tmp / "artifacts" / name).as_uri())

    started = time.perf_counter()
    load_before = os.getloadavg()
    try:
        # library prints (Trainer, MLflow) must not land in the JSON on stdout
        with contextlib.redirect_stdout(sys.stderr):
            log(f"digits: xp tracked vs untracked ({repeats} repeats)")
            digits = bench_digits(repeats, args.threads, sizes)
            log(f"tiny BERT: six arms ({repeats} repeats)")
            bert = bench_bert(tmp, repeats, args.threads, sizes["bert_steps"])
    finally:
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    result = {
        "benchmark": "tracking_overhead",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "default",
        "writer": args.writer,
        "repeats": repeats,
        "promise": {
            "statement": "with a metric logged every step, tracking costs at most 5% wall time "
                         "against the same run with --no-track",
            "max_ratio": PROMISE_MAX_RATIO,
            "digits_ratio": digits["ratios"]["xp_tracked/xp_untracked"],
            "digits_paired_ratio": digits["paired_ratios"]["xp_tracked/xp_untracked"],
            "tinybert_ratio": bert["ratios"]["xp_tracked/xp_untracked"],
            "tinybert_paired_ratio": bert["paired_ratios"]["xp_tracked/xp_untracked"],
            # a ratio is only resolved to +-5% when the arms' own run-to-run spread is near 1.05
            "largest_xp_spread": max(
                r[arm]["spread"] for r in (digits["arms"], bert["arms"])
                for arm in ("xp_tracked", "xp_untracked")
            ),
        },
        "env": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch_threads": args.threads,
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "torch": torch.__version__,
            "transformers": pkg_version("transformers"),
            "mlflow": pkg_version("mlflow"),
            "accelerate": pkg_version("accelerate"),
            "load_avg_before": [round(x, 2) for x in load_before],
            "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "digits": digits,
        "tinybert": bert,
        "total_seconds": time.perf_counter() - started,
    }  # fmt: skip
    text = json.dumps(result, indent=2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    log(summary(result))
    log(f"wrote {args.out}")
    print(text)
    return 0


if __name__ == "__main__":  # needed: xp's metric writer is a spawned process importing this file
    sys.exit(main())
