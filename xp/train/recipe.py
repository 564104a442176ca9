"""The fine-tuning recipe's arithmetic: optimizer groups with layer-wise LR decay and no weight
decay on biases and norms, the step count, and which layer groups train at a step (freezing and
gradual unfreezing). Pure functions of the config and the model; the loop is `xp.train`."""

from __future__ import annotations

import functools
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


def build_scheduler(
    optimizer: torch.optim.Optimizer, decay: str, warmup_steps: int, total: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over `warmup_steps`, then `decay` (linear or cosine to 0 at `total`, or
    constant).

    The multipliers are transformers' `get_scheduler("linear" | "cosine" |
    "constant_with_warmup")`, expression for expression, in a `functools.partial` as there: the
    same learning rates to the bit and the same `state_dict` in a checkpoint (so a run resumes
    from one either wrote). Not imported from there: `transformers.optimization` imports peft and
    Trainer's machinery, ~3 s of every run, more than a digits run's whole training loop.
    """
    rule = {"linear": _linear, "cosine": _cosine, "constant": _constant}[decay]
    lr_lambda = functools.partial(rule, num_warmup_steps=warmup_steps, num_training_steps=total)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)


def _linear(current_step: int, *, num_warmup_steps: int, num_training_steps: int) -> float:
    if current_step < num_warmup_steps:
        return float(current_step) / float(max(1, num_warmup_steps))
    return max(0.0, float(num_training_steps - current_step)
               / float(max(1, num_training_steps - num_warmup_steps)))  # fmt: skip


def _cosine(current_step: int, *, num_warmup_steps: int, num_training_steps: int) -> float:
    if current_step < num_warmup_steps:
        return float(current_step) / float(max(1, num_warmup_steps))
    progress = float(current_step - num_warmup_steps) / float(
        max(1, num_training_steps - num_warmup_steps)
    )
    num_cycles, min_lr_rate = 0.5, 0.0  # (transformers' defaults: half a cosine, down to 0)
    factor = 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress))
    factor = factor * (1 - min_lr_rate) + min_lr_rate
    return max(0, factor)


def _constant(current_step: int, *, num_warmup_steps: int, num_training_steps: int) -> float:
    if current_step < num_warmup_steps:
        return float(current_step) / float(max(1.0, num_warmup_steps))
    return 1.0


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
