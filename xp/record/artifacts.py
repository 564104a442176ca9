"""Reading what a recorded run keeps as artifacts: a text, a JSON document, a folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xp.record.track import TrackingError, get_run


def fetch_artifacts(run_id: str, artifact_path: str, dst: Path) -> bool:
    """Download `artifact_path` of a run into `dst`; False when the run has none."""
    import mlflow

    if not mlflow.MlflowClient().list_artifacts(run_id, artifact_path):
        return False
    dst.mkdir(parents=True, exist_ok=True)
    mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=artifact_path, dst_path=str(dst)
    )
    return True


def recorded_text(run_id: str, artifact_file: str) -> str:
    """A text artifact of a recorded run (e.g. its `config.yaml`).

    Raises:
        TrackingError: unknown run id, or the run has no such artifact.
    """
    import mlflow

    get_run(run_id)
    try:
        return mlflow.artifacts.load_text(f"runs:/{run_id}/{artifact_file}")
    except Exception:
        raise TrackingError(f"run {run_id} has no {artifact_file} artifact") from None


def recorded_json(run_id: str, artifact_file: str) -> dict[str, Any]:
    """A JSON artifact of a recorded run; {} when it has none (recorded before it existed)."""
    import json

    try:
        return json.loads(recorded_text(run_id, artifact_file))
    except (TrackingError, ValueError):
        return {}
