"""What an executor is given and what it reports: a seed's job, its events, the interface.

Every executor (`LocalExecutor`, `RayExecutor`) and the processes they start speak these types;
they import nothing else of xp, so an executor and what it schedules do not import each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from xp import XpError


class ExecutorError(XpError):
    """Seeds cannot be placed as asked (GPUs that are not there, a share that does not divide)."""


@dataclass
class SeedJob:
    """One seed to train: the `xp train` arguments and the environment it needs."""

    seed: int
    args: list[str]  # after `xp train`
    env: dict[str, str] = field(default_factory=dict)
    log: Path | None = None  # where its output goes
    numerics: str = "native"  # the profile its config asks for: fixed when a process starts


# on_event(seed, kind, info): kind is "started", "progress" ({"step", "total"}), "line", "done"
OnEvent = Callable[[int, str, dict], None]


class Executor(Protocol):
    def warm_up(self, seeds: int, numerics: str) -> None:
        """Get ready for `seeds` seeds of a numerics profile while the caller does its own setup
        (start workers); `run` uses what is ready. Optional work: doing nothing is correct."""
        ...

    def run(self, jobs: list[SeedJob], on_event: OnEvent) -> dict[int, int]:
        """Run every job; returns seed -> exit code."""
        ...

    def close(self) -> None:
        """Let go of whatever `warm_up` started and `run` did not use."""
        ...
