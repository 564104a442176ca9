"""Which device a run trains on: `auto` picks one, a named one must exist on this machine."""

from __future__ import annotations

import torch

from xp import XpError


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def pick_device(name: str) -> torch.device:
    """`auto` -> cuda if present, else mps, else cpu; a named device must exist here.

    Raises:
        XpError: the named device is not on this machine.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            built = torch.version.cuda or "none: a CPU-only build"
            raise XpError(
                f"train.device={name}: this machine has no usable CUDA device (torch "
                f"{torch.__version__}, CUDA {built}); use train.device=auto or cpu"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise XpError(
                f"train.device={name}: this machine has {count} CUDA device(s), "
                f"cuda:0..cuda:{count - 1}"
            )
    if device.type == "mps" and not _mps_available():
        raise XpError(f"train.device={name}: MPS is not available here; use auto or cpu")
    return device


def device_label(device: torch.device) -> str:
    """`cpu`, or `cuda:<device name>` as recorded in `xp.env.device`."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return device.type
