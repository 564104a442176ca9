"""Forgetting: what fine-tuning cost the pre-trained model.

Two measures, before training and at the kept checkpoint:

- `retention/accuracy`: where the checkpoint had a task of its own (the digits backbone keeps its
  head for digits 0-4), that head on the backbone, on the old task's data (`eval.retention`):
  logged at step 0 (before) and at the end (after), with `retention/accuracy_before` and
  `retention/drop` (before - after);
- `retention/cka`: for every model, linear CKA (Kornblith et al., 2019) between the backbone's
  features before and after fine-tuning on a fixed probe set (a sample of the validation set):
  1 = the representation did not move, lower = it moved.

The "before" is measured on the model as loaded, before a resumed run's weights replace it, so a
resumed run measures the same.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xp import XpError
from xp.config import Config
from xp.train.data import load_split, take, to_tensors
from xp.train.evaluation import fixed_sample, to_device
from xp.train.models import encoder, resolve_source

PROBE_SIZE = 512  # validation rows the features are compared on (all of them if fewer)


class RetentionError(XpError):
    """A retention set the pre-trained model cannot be measured on."""


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA between two feature matrices of the same rows (n x p, n x q)."""
    x = x - x.mean(0, keepdims=True)
    y = y - y.mean(0, keepdims=True)
    cross = np.linalg.norm(y.T @ x, "fro") ** 2
    norm = np.linalg.norm(x.T @ x, "fro") * np.linalg.norm(y.T @ y, "fro")
    return float(cross / norm) if norm > 0 else float("nan")


@torch.no_grad()
def features(model: Any, feats: dict[str, Any], device: torch.device, batch: int) -> np.ndarray:
    """The backbone's output, below the head: the CNN's pooled channels, a transformer's [CLS]."""
    model.eval()
    out = []
    for start in range(0, len(feats["labels"]), batch):
        b = to_device(take(feats, slice(start, start + batch)), device)
        if "x" in b:
            x = b["x"].float().reshape(-1, 1, 8, 8) / 16.0  # as DigitsCNN.forward
            x = model.stem(x)
            for block in model.layers:
                x = block(x)
            h = model.head[:-1](x)  # pool, flatten, dropout (off in eval mode)
        else:
            inputs = {k: v for k, v in b.items() if k != "labels"}
            h = encoder(model)(**inputs).last_hidden_state[:, 0]
        out.append(h.float().cpu().numpy())
    return np.concatenate(out)


def _old_head(config: Config, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The checkpoint's own head (the digits CNN's last Linear) as it was pre-trained: its weight
    and bias, kept on the CPU and applied with `F.linear` (no module: nothing drawn from a
    generator a seed feeds)."""
    from safetensors.torch import load_file

    if config.model.kind != "cnn":
        raise RetentionError(
            f"eval.retention: model {config.model.name!r} has no task of its own that xp can "
            "measure (only a digits CNN checkpoint keeps its head); drop eval.retention "
            "(retention/cka is measured for every model)"
        )
    _, where = resolve_source(config.model.name, root)
    state = load_file(Path(where) / "model.safetensors")
    weight, bias = state.get("head.3.weight"), state.get("head.3.bias")
    if weight is None or bias is None:
        raise RetentionError(f"eval.retention: checkpoint {config.model.name!r} has no head")
    return weight.float(), bias.float()


@dataclass
class Retention:
    """What is measured before training, to compare with the kept checkpoint."""

    probe: dict[str, Any] | None
    before: np.ndarray | None
    old: dict[str, Any] | None = None  # the retention set's tensors
    head: tuple[torch.Tensor, torch.Tensor] | None = None  # weight, bias (on the CPU)
    accuracy_before: float | None = None

    def accuracy(self, model: Any, device: torch.device, batch: int) -> float:
        """The old head on the model's features (computed on its device, judged on the CPU)."""
        assert self.old is not None and self.head is not None
        h = torch.as_tensor(features(model, self.old, device, batch))
        with torch.no_grad():
            preds = torch.nn.functional.linear(h, *self.head).argmax(-1).numpy()
        return float((preds == self.old["labels"].numpy()).mean())


def prepare(
    config: Config,
    root: Path,
    model: Any,
    tokenizer: Any,
    val: dict[str, Any],
    device: torch.device,
) -> Retention:
    """Measure the pre-trained model: the model as loaded, or, where `model.reinit_layers` has
    already re-initialised its top layers, the checkpoint loaded again without that (under a
    forked generator: the run's own draws are untouched). Raises RetentionError (one line)
    before training for a retention set the old head cannot predict, or a model without a task
    of its own."""
    batch = config.eval.batch_size
    if config.model.reinit_layers:
        from xp.train.models import build_model

        as_trained = config.model_copy(
            update={"model": config.model.model_copy(update={"reinit_layers": 0})}
        )
        with torch.random.fork_rng(devices=[]):
            model = build_model(as_trained, root, 0)[0].to(device)
    probe = fixed_sample(val, PROBE_SIZE, len(val["labels"]))
    found = Retention(probe, None if probe is None else features(model, probe, device, batch))
    if not config.eval.retention:
        return found
    weight, bias = _old_head(config, root)
    classes = weight.shape[0]
    split = load_split(root / config.eval.retention, config.data, config.task, "retention")
    labels = np.asarray(split.targets)
    if labels.size == 0:
        raise RetentionError(f"eval.retention={config.eval.retention}: the file has no rows")
    if labels.min() < 0 or labels.max() >= classes:
        raise RetentionError(
            f"eval.retention={config.eval.retention}: labels {int(labels.min())} to "
            f"{int(labels.max())} cannot be the checkpoint's own task, whose head has "
            f"{classes} classes (0..{classes - 1})"
        )  # fmt: skip
    found.old = to_tensors(split, tokenizer, config.data.max_length)
    found.head = (weight, bias)
    found.accuracy_before = found.accuracy(model, device, batch)
    return found


def record_before(tracker: Any, found: Retention) -> None:
    if found.accuracy_before is not None:
        tracker.log_metrics({"retention/accuracy": found.accuracy_before}, 0)


def record_after(
    tracker: Any, found: Retention, model: Any, device: torch.device, batch: int, step: int
) -> dict[str, float]:
    """The kept checkpoint against what was measured before: `retention/*` metrics."""
    out: dict[str, float] = {}
    if found.probe is not None and found.before is not None:
        out["retention/cka"] = linear_cka(found.before, features(model, found.probe, device, batch))
    if found.accuracy_before is not None:
        after = found.accuracy(model, device, batch)
        before = found.accuracy_before
        out.update({"retention/accuracy": after, "retention/accuracy_before": before,
                    "retention/drop": before - after})  # fmt: skip
    if out:
        tracker.log_metrics(out, step)
        tracker.log_text(json.dumps(out, indent=1), "diagnosis/retention.json")
    return out
