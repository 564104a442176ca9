"""Taking a killed run back: may it be resumed, is anyone training it, and from which point.

Every check reads only, so a mistake (a finished run, another project's, one another process is
training, a tampered checkpoint) leaves the named run exactly as it was.
"""

from __future__ import annotations

from typing import Any

import torch

from xp import XpError, one_line
from xp.record import supervise
from xp.record.workspace import Workspace
from xp.train import checkpoint


def claim(
    workspace: Workspace, run_id: str, project: str, tags: dict[str, str], model: torch.nn.Module
) -> tuple[dict[str, str], supervise.RunLock, dict[str, Any] | None]:
    """Check that `run_id` can be resumed here and now, take its lock, load its last checkpoint.

    Args:
        workspace: the repository (the run's scratch folder and lock live under it).
        run_id: the killed run.
        project: the project the user named.
        tags: the tags this code, config and data would record (compared with the run's).
        model: the freshly built model; the checkpoint's weights are loaded into it.

    Returns:
        (the run's recorded tags, its lock, the trainer state to resume from or None when the
        run was killed before its first checkpoint and restarts from step 0).

    Raises:
        XpError: not a killed training run of `project`, other code or data, a live process
            trains it, or its checkpoint is corrupt.
    """
    recorded, lock = claim_run(workspace, run_id, project, tags)
    try:
        return recorded, lock, _load_point(workspace, run_id, model)
    except BaseException:
        lock.release()
        raise


def claim_run(
    workspace: Workspace, run_id: str, project: str, tags: dict[str, str]
) -> tuple[dict[str, str], supervise.RunLock]:
    """Check that `run_id` is a killed training run of `project` on this code and data, that no
    live process trains it, and take its lock. Returns (its recorded tags, the lock).

    Raises:
        XpError: as `claim`.
    """
    recorded = _check_provenance(run_id, project, tags)
    lock = supervise.try_lock(workspace, run_id)
    if lock is None:
        pid = supervise.holder(workspace, run_id)
        raise XpError(f"run {run_id} is being trained right now by process {pid}; "
                      "wait for it to end, or stop it (it checkpoints on SIGTERM)")  # fmt: skip
    return recorded, lock


def _check_provenance(run_id: str, project: str, tags: dict[str, str]) -> dict[str, str]:
    """Refuse, before anything is written, to resume a run that is not a killed training run of
    this project, or on other code or data (it would no longer be one run). Returns its tags."""
    from xp.record.track import resumable_run

    recorded = resumable_run(run_id, project).data.tags
    keys = ["xp.config_hash", "xp.git.commit"] + [k for k in tags if k.endswith(".md5")]
    changed = [k for k in keys if k in recorded and recorded[k] != tags.get(k)]
    if changed:
        k = changed[0]
        raise XpError(
            f"cannot resume run {run_id}: {k} was {recorded[k]}, is now {tags.get(k)}; "
            "restore that code and data (git checkout, dvc checkout) or start a new run"
        )
    return recorded


def _load_point(workspace: Workspace, run_id: str, model: torch.nn.Module) -> dict[str, Any] | None:
    """The last checkpoint of a run (local, else the copy logged in the run), loaded into `model`;
    None when the run was killed before its first checkpoint (it restarts from step 0).

    Raises:
        XpError: the checkpoint is corrupt or holds objects outside the allowed types.
    """
    from xp.record.artifacts import fetch_artifacts

    work = workspace.run_dir(run_id)
    last_dir = work / "checkpoints" / "last"
    if not checkpoint.exists(last_dir):
        fetch_artifacts(run_id, "checkpoints", work)  # nothing logged yet: nothing fetched
    if not checkpoint.exists(last_dir):
        return None
    try:
        saved = checkpoint.load_state(last_dir)
        checkpoint.load_weights(last_dir, model)
    except Exception as e:
        raise XpError(
            f"cannot resume run {run_id}: its checkpoint {last_dir} is corrupt or holds objects "
            f"outside the allowed types ({one_line(e)}); the run is left "
            f"as it was. Delete {last_dir.parent} to fall back to the copy logged in the run, "
            "or start a new run"
        ) from None
    return saved
