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
    """Optimizer groups: layer-wise LR decay by depth, no weight decay on biases and norm
    weights (nor L1: `l1_penalty` reads the same groups)."""
    groups = layer_groups(model)
    top = len(groups) - 1
    out = []
    for depth, (name, params) in enumerate(groups):
        if config.model.adapter is not None:  # the frozen base is not the optimizer's
            params = [(n, p) for n, p in params if p.requires_grad]
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


def build_optimizer(groups: list[dict[str, Any]], config: Config) -> torch.optim.Optimizer:
    """`optim.name` over the groups: AdamW (decoupled weight decay), Adam, SGD or RMSprop (their
    weight decay is L2 added to the gradient, as torch does), with their own settings."""
    o = config.optim
    if o.name in ("adamw", "adam"):
        cls = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
        return cls(groups, lr=o.lr, betas=o.betas, eps=o.eps)
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum or 0.0,
                               nesterov=bool(o.nesterov))  # fmt: skip
    return torch.optim.RMSprop(groups, lr=o.lr, alpha=o.alpha or 0.99, eps=o.eps,
                               momentum=o.momentum or 0.0)  # fmt: skip


def l1_penalty(groups: list[dict[str, Any]], l1: float) -> torch.Tensor | None:
    """`optim.l1` times the absolute sum of the parameters weight decay covers (not biases or
    norms) that train now; None when `optim.l1` is 0."""
    if not l1:
        return None
    params = [p for g in groups if g["weight_decay"] for p in g["params"] if p.requires_grad]
    return l1 * sum(p.abs().sum() for p in params) if params else None


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
