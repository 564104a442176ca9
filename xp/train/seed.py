"""Seeds: one master seed -> one independent seed per source of randomness.

Separating the seeds (Dodge et al. 2020) lets a user vary weight init and data order on their
own: `seed.init=3` changes the new head's weights and nothing else.
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np

# (a purpose added later goes last: `spawn` gives child i the same seed whatever follows it, so
# every seed recorded before it was added is still what its master derives)
PURPOSES = ("init", "data_order", "dropout", "split", "augment")


def derive_seeds(master: int, overrides: dict[str, int | None] | None = None) -> dict[str, int]:
    """Derive one seed per purpose from the master seed.

    `numpy.random.SeedSequence.spawn` gives statistically independent children, so seed 1's
    data order is unrelated to seed 2's init.

    Args:
        master: the master seed.
        overrides: purpose -> seed; a non-None value replaces the derived one.

    Returns:
        {"init": ..., "data_order": ..., "dropout": ..., "split": ..., "augment": ...}, each in
        [0, 2**31).
    """
    children = np.random.SeedSequence(master).spawn(len(PURPOSES))
    seeds = {p: int(c.generate_state(1)[0] & 0x7FFFFFFF) for p, c in zip(PURPOSES, children)}
    for purpose, value in (overrides or {}).items():
        if value is not None:
            seeds[purpose] = int(value)
    return seeds


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) global RNGs."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(on: bool) -> None:
    """Ask torch for deterministic kernels (errors on ops that have none) or release it."""
    import torch

    if on:
        # cuBLAS needs a fixed workspace to be deterministic; harmless on CPU
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(on, warn_only=False)
    torch.backends.cudnn.benchmark = not on
    torch.backends.cudnn.deterministic = on


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of `n` training examples in `epoch`: a pure function of (seed, epoch).

    Being a pure function is what makes resume exact: the position in the data order is just
    (epoch, batch index), no generator state to carry.
    """
    return np.random.default_rng([seed, epoch]).permutation(n)


def rng_state() -> dict[str, Any]:
    """Torch RNG states (CPU and every CUDA device) as tensors, loadable with weights_only."""
    import torch

    state: dict[str, Any] = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    import torch

    torch.set_rng_state(state["torch_cpu"])
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["torch_cuda"])
