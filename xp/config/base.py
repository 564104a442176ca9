"""What every project config shares: its errors, seeds, task metrics and data splits."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from xp import XpError

CLASSIFICATION_METRICS = ("loss", "accuracy", "precision", "recall", "f1")
REGRESSION_METRICS = ("loss", "mae", "rmse")
# a causal language model fine-tuned by a script (TRL's SFTTrainer): the token loss, exp(loss),
# and the share of next tokens predicted right
GENERATION_METRICS = ("loss", "perplexity", "mean_token_accuracy")
METRICS = {"classification": CLASSIFICATION_METRICS, "regression": REGRESSION_METRICS,
           "generation": GENERATION_METRICS}  # fmt: skip
DEFAULT_METRIC = {"classification": "f1", "regression": "rmse", "generation": "loss"}
LOWER_IS_BETTER = frozenset({"loss", "mae", "rmse", "perplexity"})


class ConfigError(XpError):
    """A config file or override that does not validate."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SeedConfig(_Section):
    master: int = Field(1, ge=0)  # the one seed a user sets; the others derive from it
    init: int | None = Field(None, ge=0)  # weights: new head, re-initialised layers
    data_order: int | None = Field(None, ge=0)  # shuffling of the training set, epoch by epoch
    dropout: int | None = Field(None, ge=0)  # the torch RNG that dropout draws from
    split: int | None = Field(None, ge=0)  # only for projects that split data at run time
    augment: int | None = Field(None, ge=0)  # the draws of training-time augmentation


Action = Literal["warn", "stop"]


class MonitorConfig(_Section):
    """The training monitor's rules, each relative to the run's own history (xp/diagnose/monitor).

    Monitoring never changes what is trained, so these keys are left out of `xp.config_hash`.
    """

    enabled: bool = True
    window: int = Field(50, ge=5, le=100_000)  # logged steps of history the rules compare against
    min_history: int = Field(10, ge=3, le=100_000)  # steps seen before a spike or explosion counts
    spike_z: float = Field(8.0, gt=0)  # robust z of the loss against its rolling median and MAD
    grad_factor: float = Field(10.0, gt=1)  # grad norm over its rolling median
    divergence_factor: float = Field(3.0, gt=1)  # recent loss over its post-warm-up level
    stall_evals: int | None = Field(10, ge=1)  # evaluations without improvement; None = off
    on_spike: Action = "warn"
    on_grad: Action = "warn"
    on_divergence: Action = "warn"
    on_stall: Action = "warn"
    notify: str | None = None  # a command that reads each event as JSON on stdin
    notify_timeout: float = Field(10.0, gt=0, le=600)  # seconds a notify command may take

    @model_validator(mode="after")
    def _history_fits_the_window(self) -> MonitorConfig:
        if self.min_history > self.window:
            raise ValueError(
                f"monitor.min_history={self.min_history} is more than monitor.window="
                f"{self.window} holds: the spike and gradient rules would never judge"
            )
        return self


SPLITS = ("train", "validation", "test")


def split_paths(cfg: Any) -> dict[str, str]:
    """Split name -> path as written in the config, extra test sets as `test:<name>` (the trainer
    reads them, the record hashes them: both see them here)."""
    extra = getattr(cfg, "extra_tests", None) or {}  # (a script project's data has none)
    return {**{name: getattr(cfg, name) for name in SPLITS},
            **{f"test:{name}": path for name, path in extra.items()}}  # fmt: skip


def metric_key(name: str) -> str:
    """A metric name as the store holds it. An extra test set's metrics are `test@<name>/<m>` as
    the run schema spells them, but MLflow refuses `@` in a metric's name (letters, digits and
    `_-. :/` only), so they are recorded `test:<name>/<m>`; either spelling is accepted."""
    return "test:" + name[len("test@") :] if name.startswith("test@") else name


def metrics_for(task: str) -> tuple[str, ...]:
    """The metric names a task reports (`val/<m>`, `test/<m>`)."""
    return METRICS[task]


def higher_is_better(metric: str) -> bool:
    """Direction of a metric, by its last path component (`test/f1` -> higher is better)."""
    return metric.rsplit("/", 1)[-1] not in LOWER_IS_BETTER
