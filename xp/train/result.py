"""What a training job hands back, and the few shapes the loop, the CLI and script runners share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from xp.config import higher_is_better


@dataclass
class Result:
    """What a training job ended with."""

    run_id: str
    outcome: str  # ok | failed | early_stopped | pruned | killed
    status: str  # MLflow status: FINISHED | FAILED | KILLED
    message: str = ""
    test: dict[str, float] = field(default_factory=dict)
    best_val: dict[str, float] = field(default_factory=dict)
    baseline: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    signal: str = ""  # SIGINT / SIGTERM for a killed run
    fit_seconds: float = 0.0  # wall time of the training loop alone (benchmarks compare this)
    extra_tests: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> metrics


Events = Callable[[str, dict[str, Any]], None]
StopHook = Callable[[int, dict[str, float]], bool]  # (step, validation metrics) -> stop now?


def no_events(kind: str, info: dict[str, Any]) -> None:
    """The events callback of a caller that draws nothing."""


def improved(value: float, best: float | None, metric: str, min_delta: float) -> bool:
    """Whether `value` beats `best` by more than `min_delta` in the metric's direction."""
    if best is None:
        return True
    if higher_is_better(metric):
        return value > best + min_delta
    return value < best - min_delta
