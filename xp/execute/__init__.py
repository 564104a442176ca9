"""Where seeds run: the executor interface (`jobs`), warm workers and processes on this machine
(`executor`, `slots`, `worker`), and actors on a Ray cluster (`ray`).

The public surface: `for_repeat` (the executor a verb asks for), and from `executor` and `jobs`:
`LocalExecutor`, `SeedJob`, `Executor`, `ExecutorError`, `check_kind`, `gpu_slots`.
"""

from __future__ import annotations

from typing import Any

from xp.execute.executor import LocalExecutor
from xp.execute.jobs import Executor
from xp.record.workspace import Workspace


def for_repeat(config: Any, workspace: Workspace, kind: str, jobs: int, gpus_per_seed: float | None,
               ray_address: str = "auto", cpus_per_seed: float = 1.0) -> Executor:  # fmt: skip
    """The executor `xp repeat --executor <kind>` asks for (a Ray one ships this tree's code)."""
    if kind == "ray":
        from xp.execute import ray as ray_executor

        return ray_executor.for_repeat(config, workspace, ray_address, jobs, cpus_per_seed,
                                       gpus_per_seed)  # fmt: skip
    return LocalExecutor(jobs, cwd=workspace.root, kind=kind, gpus_per_seed=gpus_per_seed)
