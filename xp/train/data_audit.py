"""The data audit of a run's splits (`xp.diagnose.audit`): made once per data version, recorded
on every run (`xp.audit.*` tags, `audit/data_audit.json`), said in one line at the start."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from xp.config import SPLITS, DataConfig, ProjectConfig, ScriptConfig
from xp.diagnose import audit
from xp.record import supervise
from xp.record.workspace import Workspace
from xp.train.data import DataError, Split, load_split


def audit_splits(
    config: ProjectConfig,
    workspace: Workspace,
    versions: dict[str, dict[str, Any]],
    splits: dict[str, Split] | None = None,
) -> tuple[dict[str, Any] | None, str]:
    """The audit of the splits a run reads, from the cache when this data version was audited.

    Args:
        config: the project's config.
        workspace: where the cache lives (`.xp/audit/`).
        versions: the data files' DVC versions (`Provenance.data`), whose md5s key the cache.
        splits: the splits as the trainer read them; None for a script project, whose files are
            read here as xp's trainer would (`.npz`: `X`, `y`; `.csv`: `text`, `label`).

    Returns:
        (the audit, "") or (None, why there is none: files xp cannot read as splits).
    """
    if isinstance(config, ScriptConfig):
        reader = "script"
        try:
            splits = _script_splits(config, workspace.root)
        except DataError as e:
            return None, str(e)
    else:
        d = config.data
        reader = f"{d.format}:{d.text_column}:{d.label_column}:limit={d.train_limit}"
        fold = splits["train"].fold if splits else None
        reader += f":split={fold['md5']}" if fold else ""  # (a fold: other rows, same files)
    assert splits is not None
    md5s = [versions[name]["md5"] for name in SPLITS if name in versions]
    key = audit.version_key(md5s, config.task, reader)
    made = audit.cached_audit(workspace.scratch / "audit", key, splits, config.task,
                              before_write=lambda: supervise.fault_point("audit"))  # fmt: skip
    return made, ""


def _script_splits(config: ScriptConfig, root: Path) -> dict[str, Split]:
    if config.task == "generation":
        raise DataError("a generation task's splits have no labels to audit")
    paths = {name: getattr(config.data, name) for name in SPLITS}
    formats = {Path(p).suffix.lstrip(".") for p in paths.values()}
    if len(formats) != 1 or not formats <= {"npz", "csv"}:
        raise DataError(f"xp audits .npz (X, y) and .csv (text, label) splits; these are "
                        f"{', '.join(sorted(paths.values()))}")  # fmt: skip
    cfg = DataConfig(**paths, format=formats.pop())
    return {name: load_split(root / path, cfg, config.task, name) for name, path in paths.items()}


def record_audit(tracker: Any, found: dict[str, Any] | None, why: str) -> None:
    """The audit's tags and artifact on the run (or why it has none)."""
    if found is None:
        tracker.set_tags({"xp.audit.findings": f"not audited: {why}"[:500]})
        return
    tracker.set_tags(audit.tags(found))
    tracker.log_text(json.dumps(found, indent=1) + "\n", audit.ARTIFACT)
