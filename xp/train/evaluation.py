"""How a training run is measured: loss and metrics on a split, the same on a fixed sample of the
training set, and the overfitting diagnosis read from those evaluations at the end."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

from xp.config import Config, higher_is_better
from xp.diagnose import overfitting
from xp.train.data import take
from xp.train.metrics import task_metrics
from xp.train.models import forward

SAMPLE_SEED = 0  # the training sample is the same for every seed of every configuration


def loss_fn(task: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for classification, mean squared error for regression."""
    if task == "classification":
        return torch.nn.functional.cross_entropy(logits.float(), labels)
    return torch.nn.functional.mse_loss(logits.float().squeeze(-1), labels.float())


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, features: dict[str, Any], config: Config, device: torch.device
) -> dict[str, float]:
    """Loss and task metrics on one split (model in eval mode: no dropout)."""
    model.eval()
    n = len(features["labels"])
    logits_all, loss_sum = [], 0.0
    for start in range(0, n, config.eval.batch_size):
        batch = to_device(take(features, slice(start, start + config.eval.batch_size)), device)
        logits = forward(model, batch)
        loss_sum += loss_fn(config.task, logits, batch["labels"]).item() * len(batch["labels"])
        logits_all.append(logits.float().cpu())
    logits = torch.cat(logits_all)
    if config.task == "classification":
        preds = logits.argmax(-1).numpy()
    else:
        preds = logits.squeeze(-1).numpy()
    out = {"loss": loss_sum / n}
    out.update(task_metrics(config.task, features["labels"].numpy(), preds))
    return out


def fixed_sample(train: dict[str, Any], size: int | None, n_val: int) -> dict[str, Any] | None:
    """`size` training rows (None: `n_val`, the validation set's size) drawn once by a fixed
    generator (all of them if fewer), in file order; None when `eval.train_sample` is 0. It
    draws from no generator a seed feeds."""
    n = len(train["labels"])
    size = n_val if size is None else size
    if size <= 0 or n == 0:
        return None
    rows = np.sort(np.random.default_rng(SAMPLE_SEED).permutation(n)[: min(size, n)])
    return take(train, torch.as_tensor(rows))


def record_diagnosis(
    tracker: Any, config: Config, state: dict[str, Any], steps_per_epoch: int, sample_size: int
) -> dict[str, Any]:
    """The overfitting diagnosis of a finished run: `xp.diagnosis.*` tags and
    `diagnosis/overfitting.json`."""
    metric = config.eval.metric
    found = overfitting.diagnose(
        state["evals"], metric, higher_is_better(metric), state["best_step"], state["step"],
        config.eval.min_delta,
    )  # fmt: skip
    found["eval_every"] = config.eval.every or steps_per_epoch
    tracker.set_tags(overfitting.tags(found))
    record = {**found, "evaluations": state["evals"], "train_sample": sample_size}
    tracker.log_text(json.dumps(record, indent=1), "diagnosis/overfitting.json")
    return found
