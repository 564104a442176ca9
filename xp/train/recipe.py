"""The fine-tuning recipe's arithmetic: optimizer groups with layer-wise LR decay and no weight
decay on biases and norms, the step count, and which layer groups train at a step (freezing and
gradual unfreezing). Pure functions of the config and the model; the loop is `xp.train`."""

from __future__ import annotations

import math
from typing import Any

import torch

from xp import XpError
from xp.config import Config
from xp.train.models import layer_groups


def param_groups(model: torch.nn.Module, config: Config) -> list[dict[str, Any]]:
    """AdamW groups: layer-wise LR decay by depth, no weight decay on biases and norm weights."""
    groups = layer_groups(model)
    top = len(groups) - 1
    out = []
    for depth, (name, params) in enumerate(groups):
        scale = config.optim.layer_decay ** (top - depth)  # head 1.0, each layer below * decay
        decay = [p for n, p in params if p.ndim > 1]
        no_decay = [p for n, p in params if p.ndim <= 1]  # biases, LayerNorm/BatchNorm weights
        for plist, wd in ((decay, config.optim.weight_decay), (no_decay, 0.0)):
            if plist:
                out.append(
                    {"params": plist, "weight_decay": wd, "lr": config.optim.lr * scale,
                     "lr_scale": scale, "group": name}
                )  # fmt: skip
    return out


def total_steps(config: Config, n_train: int) -> tuple[int, int]:
    """(optimizer steps per epoch, total optimizer steps)."""
    batches = math.ceil(n_train / config.train.batch_size)
    per_epoch = math.ceil(batches / config.train.grad_accum)
    total = per_epoch * config.train.epochs
    if config.train.max_steps is not None:
        total = min(total, config.train.max_steps)
    return per_epoch, total


def lowest_trainable(config: Config, n_groups: int, step: int) -> int:
    """Index of the lowest trainable layer group at `step` (0 = embeddings, last = head).

    `train.freeze_layers=k` freezes the embeddings and the first k layers for the whole run;
    `train.unfreeze_every=N` starts with only the head trainable and unfreezes one more group,
    top down, every N steps (ULMFiT's gradual unfreezing), never below the frozen ones.
    """
    t = config.train
    base = t.freeze_layers + 1 if t.freeze_layers else (1 if t.freeze_embeddings else 0)
    if t.unfreeze_every:
        return max(base, n_groups - 1 - step // t.unfreeze_every)
    return base


def check_layers(config: Config, model: torch.nn.Module) -> None:
    """A freeze that asks for more layers than the model has is a user error."""
    n_layers = len(layer_groups(model)) - 2
    if config.train.freeze_layers > n_layers:
        raise XpError(
            f"train.freeze_layers={config.train.freeze_layers}: the model has only "
            f"{n_layers} layers"
        )
