"""Checkpoints: weights as safetensors plus the trainer state needed to resume exactly.

A checkpoint folder holds `model.safetensors` and `trainer_state.pt`. The state is plain
tensors, numbers and dicts (optimizer, scheduler, grad scaler, step, position in the data order,
RNG states, early-stopping counters), so it loads with `torch.load(weights_only=True)`: a
checkpoint cannot run code when it is opened.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

WEIGHTS = "model.safetensors"
STATE = "trainer_state.pt"


def save(directory: Path, model: torch.nn.Module, state: dict[str, Any]) -> None:
    """Write a checkpoint atomically: a killed save never leaves a half-written checkpoint."""
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / WEIGHTS))  # handles tied weights, unlike save_file
    torch.save(state, tmp / STATE)
    old = directory.with_name(directory.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


def exists(directory: Path) -> bool:
    """Whether `directory` holds a complete checkpoint."""
    return (directory / WEIGHTS).is_file() and (directory / STATE).is_file()


def load_weights(directory: Path, model: torch.nn.Module) -> None:
    """Load a checkpoint's weights into `model` (in place)."""
    missing, unexpected = load_model(model, str(directory / WEIGHTS), strict=False)
    if missing or unexpected:
        raise ValueError(f"checkpoint {directory} does not fit the model: {missing or unexpected}")


def load_state(directory: Path) -> dict[str, Any]:
    """The trainer state of a checkpoint, loaded without unpickling arbitrary objects."""
    return torch.load(directory / STATE, weights_only=True)
