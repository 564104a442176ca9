"""The workspace: the repository xp works in, found once at the edge and passed down.

A command (the CLI, a seed's own process) finds it from the folder it runs in; every module asks
it for the paths it needs (the projects, a run's scratch folder and lock, the default store)
instead of deriving them from a root of its own. Nothing here touches MLflow or torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_DB = "mlflow.db"  # MLflow 3's own default name, so a bare `mlflow ui` finds our runs
DEFAULT_ARTIFACTS = "mlruns"
SCRATCH = ".xp"  # git-ignored: checkpoints before they are logged, locks, logs, reports


@dataclass(frozen=True)
class Workspace:
    """A repository root and what xp keeps under it.

    Attributes:
        root: the git work tree (or the folder holding `dvc.yaml`) the command runs in.
    """

    root: Path

    @classmethod
    def find(cls, start: str | Path = ".") -> Workspace:
        """The workspace that holds `start` (a file or folder inside it)."""
        from xp.record.gitstate import find_repo_root

        return cls(find_repo_root(start))

    @classmethod
    def of(cls, where: Workspace | str | Path) -> Workspace:
        """`where` as a workspace: one already, or its root folder."""
        return where if isinstance(where, Workspace) else cls(Path(where))

    @property
    def projects(self) -> Path:
        """The folder of projects: one `<task>/config.yaml` each."""
        return self.root / "projects"

    def project(self, name: str) -> Path:
        """One project's folder (its config.yaml, search.yaml)."""
        return self.projects / name

    @property
    def scratch(self) -> Path:
        """xp's local, git-ignored working folder."""
        return self.root / SCRATCH

    def run_dir(self, run_id: str) -> Path:
        """A run's local working folder (checkpoints before they are logged, its lock, its seeds'
        logs and report); made on first use."""
        path = self.scratch / "runs" / run_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def run_lock(self, run_id: str) -> Path:
        """The lock file a live process holds while it trains the run (not made here)."""
        return self.scratch / "runs" / run_id / ".lock"

    def reproduce_dir(self, run_id: str) -> Path:
        """A new folder for one reproduction of a run: its worktree and data, outside the tree
        the user works in (not made here)."""
        import time

        return self.scratch / "reproduce" / f"{run_id[:12]}-{time.strftime('%Y%m%d-%H%M%S')}"

    def ray_code(self, name: str) -> Path:
        """Where the code shipped to Ray's workers (commit + diff) is assembled."""
        return self.scratch / "ray" / name

    def ray_log(self, name: str) -> Path:
        """A seed's log on a Ray node (its own copy of the workspace)."""
        return self.scratch / "ray-logs" / name

    @property
    def default_store(self) -> str:
        """The embedded store at the root, where no MLFLOW_TRACKING_URI says otherwise."""
        return f"sqlite:///{(self.root / DEFAULT_DB).resolve()}"

    @property
    def default_artifacts(self) -> Path:
        """Where the embedded store's experiments keep their artifacts."""
        return self.root / DEFAULT_ARTIFACTS
