"""Training-time augmentation, drawn from its own seed (`seed.augment`).

Images (`model.kind: cnn`, npz inputs): small shifts and rotations (kornia's `RandomAffine`) and
Gaussian noise (`RandomGaussianNoise`), each drawn per example. kornia rather than torchvision:
its augmentations are plain PyTorch, so they run beside any torch build; PyPI's torchvision wheels
are built against the CUDA torch and do not import beside the CPU build this project installs
("operator torchvision::nms does not exist").

Text (`model.kind: hf`): on token ids, special and padding tokens untouched, a share of tokens
replaced by the tokenizer's mask token (`augment.mask`) or deleted (`augment.delete`, the rest
moved left; at least one token of each text is kept).

The draws of a batch are a pure function of (seed.augment, epoch, batch index), like the data
order: a resumed run redraws exactly what it would have drawn, with no generator state to carry,
and dropout's generator is never touched.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from xp.config import ConfigError
from xp.config.trainer import AugmentConfig


class Augmenter:
    """Callable on a training batch: `augment(batch, epoch, index) -> batch`."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    @staticmethod
    def build(cfg: AugmentConfig, seed: int, train: dict[str, Any], tokenizer: Any) -> Augmenter:
        """The augmenter `cfg` asks for (one that changes nothing when every knob is 0).

        Raises:
            ConfigError: image augmentation of inputs that are not images, a text augmentation
                the tokenizer cannot do.
        """
        if cfg.shift or cfg.rotate or cfg.noise:
            return ImageAugmenter(cfg, seed, train["x"])
        if cfg.mask or cfg.delete:
            return TextAugmenter(cfg, seed, tokenizer)
        return Augmenter(seed)

    def draw_seed(self, epoch: int, index: int) -> int:
        return int(np.random.SeedSequence([self.seed, epoch, index]).generate_state(1)[0])

    def __call__(self, batch: dict[str, Any], epoch: int, index: int) -> dict[str, Any]:
        return batch


def image_shape(x: torch.Tensor) -> tuple[int, int, int]:
    """(channels, height, width) of the images in `x`: (N, C, H, W), (N, H, W), or square images
    flattened to (N, H*W) as scikit-learn's digits are.

    Raises:
        ConfigError: the inputs are not images.
    """
    if x.ndim == 4:
        return tuple(x.shape[1:])  # type: ignore[return-value]
    if x.ndim == 3:
        return (1, x.shape[1], x.shape[2])
    side = math.isqrt(x.shape[1]) if x.ndim == 2 else 0
    if x.ndim == 2 and side * side == x.shape[1] and side > 1:
        return (1, side, side)
    raise ConfigError(
        f"augment.shift/rotate/noise need images; the training inputs are {tuple(x.shape)} "
        "(not square images, nor (N, H, W) or (N, C, H, W)); set them to 0"
    )


class ImageAugmenter(Augmenter):
    def __init__(self, cfg: AugmentConfig, seed: int, x: torch.Tensor) -> None:
        super().__init__(seed)
        import kornia.augmentation as K

        self.shape = image_shape(x)
        self.low, self.high = float(x.min()), float(x.max())  # pixels stay in the data's range
        steps: list[torch.nn.Module] = []
        if cfg.shift or cfg.rotate:
            steps.append(K.RandomAffine(degrees=cfg.rotate, translate=(cfg.shift, cfg.shift),
                                        p=1.0, padding_mode="zeros"))  # fmt: skip
        if cfg.noise:  # the noise's sd in units of the training inputs' own sd
            steps.append(K.RandomGaussianNoise(std=cfg.noise * float(x.float().std()), p=1.0))
        self.pipeline = torch.nn.Sequential(*steps)

    def __call__(self, batch: dict[str, Any], epoch: int, index: int) -> dict[str, Any]:
        x = batch["x"]
        with torch.random.fork_rng(devices=[]):  # (kornia draws from the global generator)
            torch.manual_seed(self.draw_seed(epoch, index))
            out = self.pipeline(x.float().reshape(-1, *self.shape))
        out = out.clamp(self.low, self.high).reshape(x.shape).to(x.dtype)
        return {**batch, "x": out}


class TextAugmenter(Augmenter):
    def __init__(self, cfg: AugmentConfig, seed: int, tokenizer: Any) -> None:
        super().__init__(seed)
        self.mask, self.delete = cfg.mask, cfg.delete
        self.mask_id = getattr(tokenizer, "mask_token_id", None)
        self.pad_id = getattr(tokenizer, "pad_token_id", None) or 0
        if self.mask and self.mask_id is None:
            raise ConfigError("augment.mask needs a tokenizer with a mask token; this one has none")
        self.special = torch.as_tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)

    def __call__(self, batch: dict[str, Any], epoch: int, index: int) -> dict[str, Any]:
        ids, attention = batch["input_ids"].clone(), batch["attention_mask"]
        g = torch.Generator().manual_seed(self.draw_seed(epoch, index))
        content = attention.bool() & ~torch.isin(ids, self.special)
        if self.mask:
            ids[(torch.rand(ids.shape, generator=g) < self.mask) & content] = self.mask_id
        out = {**batch, "input_ids": ids}
        if self.delete:
            out.update(self._delete(out, content, torch.rand(ids.shape, generator=g)))
        return out

    def _delete(self, batch: dict[str, Any], content: torch.Tensor, draws: torch.Tensor) -> dict:
        gone = (draws < self.delete) & content
        emptied = (content & ~gone).sum(1) == 0  # a text would lose every token: keep its first
        first = content.float().argmax(1)
        gone[emptied, first[emptied]] = False
        keep = batch["attention_mask"].bool() & ~gone
        order = torch.argsort((~keep).int(), dim=1, stable=True)  # kept tokens first, in order
        kept = torch.gather(keep, 1, order)
        out = {}
        for name, fill in (("input_ids", self.pad_id), ("token_type_ids", 0)):
            if name in batch:
                out[name] = torch.gather(batch[name], 1, order).masked_fill(~kept, fill)
        out["attention_mask"] = kept.to(batch["attention_mask"].dtype)
        return out
