"""The config of a project that xp's own trainer trains (`model.kind` hf or cnn)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from xp.config.base import MonitorConfig, SeedConfig, _Section, metrics_for


class ResplitConfig(_Section):
    """Train and validation pooled and split again, the test set fixed (xp/train/folds.py): one
    fold of a K-fold (`kfold`) or one random re-split of the same sizes (`resample`). The split is
    drawn from `seed.split`: `xp repeat --folds K` gives every seed the same K folds."""

    kind: Literal["kfold", "resample"]
    count: int = Field(ge=2, le=1000)  # folds (kfold) or resamples in the design
    index: int = Field(0, ge=0)  # this run's fold or resample, from 0

    @model_validator(mode="after")
    def _index_in_range(self) -> ResplitConfig:
        if self.index >= self.count:
            what = "folds" if self.kind == "kfold" else "resamples"
            raise ValueError(f"data.resplit.index={self.index} is not one of the {self.count} "
                             f"{what} (0..{self.count - 1})")  # fmt: skip
        return self


class DataConfig(_Section):
    train: str
    validation: str
    test: str
    format: Literal["npz", "csv"]
    text_column: str = "text"
    label_column: str = "label"
    label_names: list[str] | None = None  # class names, in label order; shown by the logged model
    max_length: int = Field(32, ge=1, le=4096)
    train_limit: int | None = Field(None, ge=1)  # few-shot: keep the first N training rows
    # more test sets, {name: path} (out-of-distribution ones): `test:<name>/<m>` on the kept model
    extra_tests: dict[str, str] = {}
    # false where train and validation must stay as the files have them (validation later in time,
    # or other patients): folds and resamples are then refused
    poolable: bool = True
    resplit: ResplitConfig | None = None  # folds / resamples of train + validation pooled

    @field_validator("extra_tests")
    @classmethod
    def _test_names(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
                raise ValueError(
                    f"extra test set name {name!r}: use letters, digits, _ and - (it becomes the "
                    f"metric prefix test:<name>/)"
                )
        return v


class AdapterConfig(_Section):
    """Parameter-efficient fine-tuning through peft: the base model frozen, small adapters and the
    new head trained (xp/train/adapter.py)."""

    kind: Literal["lora"] = "lora"
    r: int = Field(8, ge=1, le=4096)  # the rank of each low-rank update
    alpha: float = Field(16.0, gt=0)  # the update is scaled by alpha / r
    dropout: float = Field(0.0, ge=0, lt=1)  # dropout on the adapter's input
    # module names to adapt (`query`, `value`, ...); None: peft's default for the architecture
    target_modules: list[str] | None = None


class ModelConfig(_Section):
    kind: Literal["hf", "cnn"]
    name: str  # local path (relative to the repo), pkg://<module>/<dir>, or a hub id
    num_labels: int = Field(ge=1)
    dropout: float | None = Field(None, ge=0, lt=1)  # None keeps the checkpoint's own
    reinit_layers: int = Field(0, ge=0)  # re-initialise the top k layers before training
    adapter: AdapterConfig | None = None  # LoRA: train adapters on a frozen base

    def check(self, train: TrainConfig) -> None:
        """What an adapter does not combine with, said in one line."""
        if self.adapter is None:
            return
        if self.kind != "hf":
            raise ValueError(f"model.adapter needs model.kind=hf (peft on a transformer); "
                             f"this model is {self.kind}")  # fmt: skip
        if self.reinit_layers:
            raise ValueError(
                "model.reinit_layers does not combine with model.adapter: the re-initialised "
                "layers would stay frozen at random values"
            )
        for key in ("freeze_layers", "unfreeze_every"):  # (frozen embeddings: frozen anyway)
            if getattr(train, key):
                raise ValueError(f"train.{key} does not combine with model.adapter: the adapter "
                                 f"decides what trains (the base stays frozen)")  # fmt: skip


# what each optimizer takes besides lr and weight decay
OWN_SETTINGS = {"adamw": {"betas", "eps"}, "adam": {"betas", "eps"},
                "sgd": {"momentum", "nesterov"},
                "rmsprop": {"alpha", "eps", "momentum"}}  # fmt: skip


class OptimConfig(_Section):
    lr: float = Field(gt=0, le=1)
    name: Literal["adamw", "adam", "sgd", "rmsprop"] = "adamw"
    weight_decay: float = Field(0.01, ge=0)  # AdamW: decoupled; the others: L2 in the gradient
    l1: float = Field(0.0, ge=0)  # an L1 penalty on the parameters weight decay covers (train/l1)
    betas: tuple[float, float] = (0.9, 0.999)  # adam, adamw
    eps: float = Field(1e-8, gt=0)  # adam, adamw, rmsprop
    momentum: float | None = Field(None, ge=0, lt=1)  # sgd, rmsprop (None: 0)
    nesterov: bool | None = None  # sgd (needs momentum)
    alpha: float | None = Field(None, gt=0, lt=1)  # rmsprop's smoothing (None: 0.99)
    layer_decay: float = Field(1.0, gt=0, le=1)  # layer-wise LR decay; 1.0 = off

    def check(self) -> None:
        """A setting of another optimizer than the one named is a mistake, said in one line."""
        given = {k for k in ("betas", "eps", "momentum", "nesterov", "alpha")
                 if k in self.model_fields_set and getattr(self, k) is not None}  # fmt: skip
        foreign = sorted(given - OWN_SETTINGS[self.name])
        if foreign:
            raise ValueError(
                f"optim.{foreign[0]} is not a setting of optim.name={self.name}; "
                f"{self.name} takes {', '.join(sorted(OWN_SETTINGS[self.name]))}"
            )
        if self.nesterov and not self.momentum:
            raise ValueError("optim.nesterov=true needs optim.momentum > 0")

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in v):
            raise ValueError("each beta must be in [0, 1)")
        return v


class ScheduleConfig(_Section):
    warmup: float = Field(0.06, ge=0, lt=1)  # fraction of all optimizer steps
    decay: Literal["linear", "cosine", "constant"] = "linear"


class TrainConfig(_Section):
    epochs: int = Field(3, ge=1)
    max_steps: int | None = Field(None, ge=1)  # caps optimizer steps (overrides epochs if lower)
    batch_size: int = Field(32, ge=1)
    grad_accum: int = Field(1, ge=1)
    clip_norm: float | None = Field(1.0, gt=0)
    freeze_embeddings: bool = False
    freeze_layers: int = Field(0, ge=0)
    unfreeze_every: int | None = Field(None, ge=1)  # gradual unfreezing: one more layer per N steps
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # autocast only on a GPU
    deterministic: bool = True
    numerics: Literal["native", "portable"] = "native"  # portable: same bits on any x86-64 CPU
    device: str = "auto"  # auto, cpu, cuda, cuda:<index>, mps (checked against the machine later)
    threads: int | None = Field(None, ge=1)
    checkpoint_every: int | None = Field(None, ge=1)  # save a resumable checkpoint every N steps

    @field_validator("device")
    @classmethod
    def _known_device(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v):
            raise ValueError("unknown device; use auto, cpu, cuda, cuda:<index> or mps")
        return v


class EvalConfig(_Section):
    every: int | None = Field(None, ge=1)  # optimizer steps between evaluations; None = per epoch
    metric: str = "f1"  # validation metric that picks the best checkpoint and stops early
    patience: int | None = Field(None, ge=1)  # evaluations without improvement; None = never stop
    min_delta: float = Field(0.0, ge=0)
    batch_size: int = Field(256, ge=1)
    # a fixed sample of the training set evaluated like validation (the overfitting diagnosis):
    # its size; None = the validation set's, so both are measured as precisely; 0 = off
    train_sample: int | None = Field(None, ge=0)
    # the pre-trained model's own task (a split file its head was trained for): forgetting
    retention: str | None = None
    # an adapter run's merge check: the merged model's outputs may differ by this much at most
    merge_tolerance: float = Field(1e-4, gt=0)


IMAGE_AUGMENTS, TEXT_AUGMENTS = ("shift", "rotate", "noise"), ("mask", "delete")


class AugmentConfig(_Section):
    """Training-time augmentation, drawn from `seed.augment` (xp/train/augment.py); 0 is off."""

    # images (model.kind cnn): per example, kornia's RandomAffine and RandomGaussianNoise
    shift: float = Field(0.0, ge=0, lt=0.5)  # largest translation, a fraction of width and height
    rotate: float = Field(0.0, ge=0, le=180)  # largest rotation, in degrees
    noise: float = Field(0.0, ge=0, le=2)  # Gaussian noise sd, in units of the inputs' own sd
    # text (model.kind hf): on token ids; special and padding tokens are never touched
    mask: float = Field(0.0, ge=0, lt=1)  # share of tokens replaced by the mask token
    delete: float = Field(0.0, ge=0, lt=1)  # share of tokens deleted (one is always kept)

    def check(self, kind: str) -> None:
        """An augmentation of the other input kind is a mistake, said in one line."""
        wrong, right, inputs = ((TEXT_AUGMENTS, IMAGE_AUGMENTS, "images") if kind == "cnn"
                                else (IMAGE_AUGMENTS, TEXT_AUGMENTS, "text"))  # fmt: skip
        for key in wrong:
            if getattr(self, key):
                raise ValueError(
                    f"augment.{key} does not apply to model.kind={kind}, which takes {inputs}; "
                    f"use augment.{', augment.'.join(right)}"
                )


class Config(_Section):
    project: str
    task: Literal["classification", "regression"]
    seed: SeedConfig = SeedConfig()
    data: DataConfig
    model: ModelConfig
    optim: OptimConfig
    schedule: ScheduleConfig = ScheduleConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    monitor: MonitorConfig = MonitorConfig()
    augment: AugmentConfig = AugmentConfig()

    @field_validator("seed", mode="before")
    @classmethod
    def _seed_int_is_master(cls, v: Any) -> Any:
        return {"master": v} if isinstance(v, int) and not isinstance(v, bool) else v

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        self.optim.check()
        self.augment.check(self.model.kind)
        self.model.check(self.train)
        if self.data.resplit is not None and not self.data.poolable:
            raise ValueError(
                "data.resplit: this project's train and validation cannot be pooled "
                "(data.poolable: false): its folds would mix what must stay apart"
            )
        allowed = metrics_for(self.task)
        if self.eval.metric not in allowed:
            raise ValueError(
                f"eval.metric={self.eval.metric!r} is not a {self.task} metric; "
                f"use one of {', '.join(allowed)}"
            )
        if self.task == "regression" and self.model.num_labels != 1:
            raise ValueError(f"model.num_labels={self.model.num_labels}: regression needs 1")
        if self.task == "classification" and self.model.num_labels < 2:
            raise ValueError(
                f"model.num_labels={self.model.num_labels}: classification needs at least 2"
            )
        names = self.data.label_names
        if names is not None and len(names) != self.model.num_labels:
            raise ValueError(
                f"data.label_names has {len(names)} names for model.num_labels="
                f"{self.model.num_labels} classes; give one name per class, in label order"
            )
        return self
