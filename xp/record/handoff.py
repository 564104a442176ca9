"""What xp hands a training script's process, and how the script reads it: environment variables.

xp opens and records the run before the script starts, then hands it over: MLflow's own
`MLFLOW_TRACKING_URI`, `MLFLOW_EXPERIMENT_ID` and `MLFLOW_RUN_ID` (so `mlflow.start_run()`, HF's
`MLflowCallback` or Lightning's `MLFlowLogger` log into that run, not a new one), and `XP_*`
variables with the seeds, the scratch folder, the checkpoint to resume from and how to run.
`MLFLOW_RUN_CONTEXT` tags every run a script opens on its own (`xp.opened_by`), so xp can name
a script that opened a run of its own instead of the one it was handed.

Both sides use `Handoff`: the runner writes it (`to_env`), the integrations read it (`from_env`).
Nothing here imports torch or MLflow.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

RUN_ENV = "XP_RUN_ID"  # set only for a process xp started to train that run
OPENED_BY_TAG = "xp.opened_by"  # on every run a handed-over script opens itself
CHECKPOINT_TAG = "xp.checkpoint"  # the last checkpoint a script saved: `--resume` hands it back
STOP_CODES = {"SIGINT": 130, "SIGTERM": 143}  # a script stopped by a signal exits with these


@dataclass
class Handoff:
    """One run, as a script sees it."""

    run_id: str
    project: str
    task: str
    metric: str  # the validation/test metric the project is judged on (`f1`)
    run_dir: Path  # the run's scratch folder: checkpoints go under it
    seeds: dict[str, int] = field(default_factory=dict)  # master, init, data_order, dropout
    resume_from: Path | None = None  # the checkpoint to continue from
    deterministic: bool = True
    threads: int | None = None
    checkpoint_every: int | None = None
    workspace: Path | None = None

    def to_env(self) -> dict[str, str]:
        """The variables that carry this hand-off (besides MLflow's own)."""
        env = {
            RUN_ENV: self.run_id,
            "XP_PROJECT": self.project,
            "XP_TASK": self.task,
            "XP_METRIC": self.metric,
            "XP_RUN_DIR": str(self.run_dir),
            "XP_SEEDS": json.dumps(self.seeds, sort_keys=True),
            "XP_DETERMINISTIC": "1" if self.deterministic else "0",
            "XP_RESUME_FROM": str(self.resume_from or ""),
            "XP_THREADS": str(self.threads or ""),
            "XP_CHECKPOINT_EVERY": str(self.checkpoint_every or ""),
            "XP_WORKSPACE": str(self.workspace or ""),
            "MLFLOW_RUN_ID": self.run_id,
            "MLFLOW_RUN_CONTEXT": json.dumps({OPENED_BY_TAG: self.run_id}),
        }
        if self.threads:  # libraries that read the usual variables take the seed's share too
            env.update(OMP_NUM_THREADS=str(self.threads), MKL_NUM_THREADS=str(self.threads))
        return env

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Handoff | None:
        """The hand-off of this process, or None when xp did not start it."""
        env = os.environ if environ is None else environ
        if not env.get(RUN_ENV):
            return None

        def number(key: str) -> int | None:
            return int(env[key]) if env.get(key) else None

        return cls(
            run_id=env[RUN_ENV],
            project=env.get("XP_PROJECT", ""),
            task=env.get("XP_TASK", "classification"),
            metric=env.get("XP_METRIC", "f1"),
            run_dir=Path(env.get("XP_RUN_DIR") or "."),
            seeds={k: int(v) for k, v in json.loads(env.get("XP_SEEDS") or "{}").items()},
            resume_from=Path(env["XP_RESUME_FROM"]) if env.get("XP_RESUME_FROM") else None,
            deterministic=env.get("XP_DETERMINISTIC", "1") == "1",
            threads=number("XP_THREADS"),
            checkpoint_every=number("XP_CHECKPOINT_EVERY"),
            workspace=Path(env["XP_WORKSPACE"]) if env.get("XP_WORKSPACE") else None,
        )
