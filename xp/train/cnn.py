"""The digits CNN architecture: its own module, so the DVC stage that pre-trains it depends
on the architecture alone (editing model-loading code elsewhere does not re-train the backbone).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

WEIGHTS = "model.safetensors"


class DigitsCNN(nn.Module):
    """A small CNN for 8x8 digit images; takes raw pixels (0-16) shaped (N,64) or (N,8,8)."""

    def __init__(self, num_labels: int, channels: tuple[int, ...] = (32, 32, 64, 64)):
        super().__init__()
        self.channels = list(channels)
        self.stem = nn.Sequential(nn.Conv2d(1, channels[0], 3, padding=1), nn.ReLU())
        blocks = []
        for i, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:])):
            layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU()]
            if i == 0:
                layers.append(nn.MaxPool2d(2))  # 8x8 -> 4x4
            blocks.append(nn.Sequential(*layers))
        self.layers = nn.ModuleList(blocks)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.1),
            nn.Linear(channels[-1], num_labels),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(x).float().reshape(-1, 1, 8, 8) / 16.0  # raw pixels in, as served
        x = self.stem(x)
        for block in self.layers:
            x = block(x)
        return self.head(x)


def new_cnn(num_labels: int, channels: tuple[int, ...] = (32, 32, 64, 64)) -> DigitsCNN:
    """A freshly initialised digits CNN (uses the torch global RNG)."""
    return DigitsCNN(num_labels, channels)


def save_cnn(model: DigitsCNN, out_dir: Path) -> None:
    """Save a digits CNN as `model.safetensors` + `config.json`."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out_dir / WEIGHTS)
    num_labels = model.head[-1].out_features
    cfg = {"arch": "digits_cnn", "channels": model.channels, "num_labels": num_labels}
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
