"""The tracker every trainer writes a run through, and the reads of recorded runs.

`start_tracker` returns an `MlflowTracker` (or a `NullTracker` with the same methods when tracking
is off), so the trainer never branches on "is tracking on". Metrics are buffered in memory and
handed in batches to the run's writer (`xp.record.metric_writer`): logging every step costs an
append. Every other write (params, tags, texts, inputs, artifacts, the model, the end) is an op
the writer does in order behind them (`xp.record.ops`): the training process opens no store.
"""

from __future__ import annotations

import math
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xp import XpError
from xp.record.metric_writer import CallError, start_writer
from xp.record.ops import (  # noqa: F401  (experiment_for: the verbs')
    EXPERIMENT_ENV,
    Build,
    experiment_for,
    log_model,
    save_payload,
)
from xp.record.store import configure_store, redact
from xp.record.store_lock import StoreError
from xp.record.workspace import Workspace


class TrackingError(XpError):
    """Unknown run id, unreachable store, or a run that cannot be resumed."""


class MlflowTracker:
    """An MLflow run, written by the metric writer (`xp.record.ops`): tags, params, texts and
    inputs queued in order behind the metrics logged before them; artifacts, the model and the
    end done before the call returns. This process opens no store for it."""

    enabled = True
    detached = False  # not MLflow's active run: ended through the client

    def __init__(self, run_id: str, flush_every: int = 1000, flush_seconds: float = 2.0):
        self.run_id = run_id
        self._buffer: list[tuple[str, float, int, int]] = []
        self._flush_every = flush_every
        self._flush_seconds = flush_seconds
        self._last_flush = time.monotonic()
        self._uri = os.environ["MLFLOW_TRACKING_URI"]
        self._writer = start_writer()  # from xp.record.metric_writer
        self.resumed = False
        self._recorded: dict[str, dict[int, float]] | None = None  # points already in the store
        self.mismatched_points = 0

    def _op(self, op: str, **args: Any) -> None:
        self._send()  # (behind the metrics logged before it)
        self._writer.op(self._uri, self.run_id, op, args)

    def _call(self, op: str, **args: Any) -> Any:
        self._send()
        return call(self._writer, self._uri, self.run_id, op, args)

    # -- params, tags -------------------------------------------------------------------------
    def log_params(self, params: dict[str, Any]) -> None:
        """Log params; keys the run already has (e.g. `mlflow run -P`) are kept as they are."""
        self._op("log_params", params={k: str(v)[:6000] for k, v in params.items()})

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._op("set_tags", tags={k: str(v) for k, v in tags.items() if v is not None})

    def tags(self) -> dict[str, str]:
        """The run's current tags."""
        return self._call("tags")

    # -- metrics ------------------------------------------------------------------------------
    def skip_recorded_points(self) -> None:
        """A resumed run replays the steps between its checkpoint and the kill; the points of
        those steps that reached the store before the kill are not logged a second time."""
        self._recorded = {k: dict(points) for k, points in metric_histories(self.run_id).items()}

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Buffer metrics; a writer process puts them in the store, off the training process."""
        ts = int(time.time() * 1000)
        if self._recorded:
            metrics = self._unrecorded(metrics, step)
        self._buffer.extend((k, float(v), ts, step) for k, v in metrics.items())
        if (
            len(self._buffer) >= self._flush_every
            or time.monotonic() - self._last_flush > self._flush_seconds
        ):
            self._send()

    def _unrecorded(self, metrics: dict[str, float], step: int) -> dict[str, float]:
        out = {}
        for k, v in metrics.items():
            before = self._recorded.get(k, {}).get(step)
            if before is None:
                out[k] = v
            elif not (before == v or (math.isnan(before) and math.isnan(v))):
                self.mismatched_points += 1  # the replay differs: non-deterministic kernels
        return out

    def _send(self) -> None:
        batch, self._buffer = self._buffer, []
        self._last_flush = time.monotonic()
        if batch:
            self._writer.put(self._uri, self.run_id, batch)

    def flush(self) -> None:
        """Block until every buffered metric (and every write queued) is in the store."""
        self._send()
        self._writer.wait()

    def metric_history(self, key: str) -> list[tuple[int, float]]:
        """(step, value) pairs of one metric, in step order."""
        return [(s, v) for s, v in self._call("metric_history", key=key)]

    # -- artifacts, inputs, models ------------------------------------------------------------
    def log_artifacts(self, local_dir: Path, artifact_path: str) -> None:
        """Copy a folder's files into the run (done when it returns: the folder may change)."""
        self._call("log_artifacts", local_dir=str(local_dir), artifact_path=artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._op("log_text", text=text, artifact_file=artifact_file)

    def log_input(self, name: str, path: str, md5: str, context: str) -> None:
        """Record a dataset read by the run, its digest being the DVC md5."""
        self._op("log_input", name=name, path=path, md5=md5, context=context)

    def log_model(self, model: Any, flavor: str, **kwargs: Any) -> str:
        """Log a model named `model` with the given flavor (`xp.record.ops.log_model`: the
        installed versions as its requirements); returns its model URI. A `Build` (xp's own
        models) is logged by the writer, from a pickle in a temporary file; any other model (a
        script's, with hooks a pickle cannot carry) here, once the writes before it are done."""
        if not isinstance(model, Build):
            self.flush()
            return log_model(self.run_id, model, flavor, kwargs)
        import tempfile

        with tempfile.TemporaryDirectory(prefix="xp-model-") as tmp:
            payload = save_payload(Path(tmp) / "model.pkl", model, flavor, kwargs)
            return self._call("log_model", payload=str(payload))

    def end(self, status: str) -> None:
        """Flush and close the run with an MLflow status (FINISHED, FAILED, KILLED).

        A run whose last metrics could not be written is not FINISHED: it ends FAILED (KILLED
        when the flush was interrupted) and the error goes on to the caller.
        """
        try:
            self.flush()
            if self.mismatched_points:  # kept the first value of each; say that it differed
                self.set_tags({"xp.resume.mismatched_points": str(self.mismatched_points)})
        except KeyboardInterrupt:
            status = "KILLED" if status == "FINISHED" else status
            raise
        except BaseException:
            status = "FAILED" if status == "FINISHED" else status
            raise
        finally:
            self._call("end", status=status)
            _end_here(self.run_id, status)


def call(writer: Any, uri: str, run_id: str | None, op: str, args: dict[str, Any],
         meanwhile: Callable[[], None] | None = None) -> Any:  # fmt: skip
    """An op (`xp.record.ops`) done by the writer, its answer returned; its refusal raised as
    the error it names (one line)."""
    try:
        return writer.call(uri, run_id, op, args, meanwhile)
    except CallError as e:
        raise (StoreError if e.kind == "StoreError" else TrackingError)(str(e)) from None


def _end_here(run_id: str, status: str) -> None:
    """A process that made the run its own active MLflow run (a script's, `xp.integrations`)
    ends it too, or MLflow ends it FINISHED as the process exits."""
    import sys

    mlflow = sys.modules.get("mlflow")
    active = mlflow.active_run() if mlflow is not None else None
    if active is not None and active.info.run_id == run_id:
        mlflow.end_run(status=status)


class NullTracker:
    """Tracking off (`--no-track`): the same methods, nothing recorded."""

    enabled = False
    resumed = False

    def __init__(self) -> None:
        self.run_id = f"notrack-{uuid.uuid4().hex[:12]}"
        self._metrics: dict[str, list[tuple[int, float]]] = {}

    def skip_recorded_points(self) -> None:
        pass

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def set_tags(self, tags: dict[str, Any]) -> None:
        pass

    def tags(self) -> dict[str, str]:
        return {}

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def flush(self) -> None:
        pass

    def metric_history(self, key: str) -> list[tuple[int, float]]:
        return []

    def log_artifacts(self, local_dir: Path, artifact_path: str) -> None:
        pass

    def log_text(self, text: str, artifact_file: str) -> None:
        pass

    def log_input(self, name: str, path: str, md5: str, context: str) -> None:
        pass

    def log_model(self, model: Any, flavor: str, **kwargs: Any) -> str:
        return ""

    def end(self, status: str) -> None:
        pass


Tracker = MlflowTracker | NullTracker


def start_tracker(
    enabled: bool,
    project: str,
    workspace: Workspace | Path,
    resume_run_id: str | None = None,
    tags: dict[str, str] | None = None,
    run_name: str | None = None,
    detached: bool = False,
    meanwhile: Callable[[], None] | None = None,
    params: dict[str, Any] | None = None,
) -> Tracker:
    """Open the run that records a training job.

    Under `mlflow run`, the run MLflow created (`MLFLOW_RUN_ID`) is used. With `resume_run_id`,
    that run is reopened and continues where it stopped. `detached`: the run is not MLflow's
    active run (a search's study run, under which repeats open runs of their own); such a
    tracker logs no inputs or models. `meanwhile`: the caller's work, done while the writer
    opens the store and the run (a trainer's imports). `params`: logged with the run's creation
    (those it has already are kept), so a run whose trainer dies while the writer creates it
    still says which seed it is (a repeat resumes it instead of training that seed twice).

    Raises:
        TrackingError: `resume_run_id` names no run in the store.
    """
    if not enabled:
        return NullTracker()
    workspace = Workspace.of(workspace)
    uri = configure_store(workspace, here=False)  # (the writer opens it, in `start`)
    run_id = resume_run_id or os.environ.get("MLFLOW_RUN_ID")
    args = {"project": project, "root": str(workspace.root), "run_id": run_id,
            "detached": detached, "tags": {k: str(v) for k, v in (tags or {}).items()},
            "run_name": run_name, "argv": sys.argv[:1],
            "params": {k: str(v)[:6000] for k, v in (params or {}).items()},
            "env": {k: os.environ[k] for k in EXPERIMENT_ENV if k in os.environ}}  # fmt: skip
    tracker = MlflowTracker(call(start_writer(), uri, None, "start", args, meanwhile))
    tracker.detached = detached
    tracker.resumed = resume_run_id is not None
    return tracker


RESUMABLE = ("RUNNING", "KILLED")


def resumable_run(run_id: str, project: str) -> Any:
    """The run `--resume` names, if it is a killed (or orphaned) training run of `project`.

    Reads only: a mistake here leaves the named run exactly as it was.

    Raises:
        TrackingError: unknown id, not a training run, another project, or a finished run.
    """
    run = get_run(run_id)
    tags, status = run.data.tags, run.info.status
    kind = tags.get("xp.kind", "none")
    if kind != "train":
        raise TrackingError(
            f"--resume {run_id}: not a training run (xp.kind={kind}); give the id of a killed "
            "`xp train` run (a repeat resumes by running the same `xp repeat` command again)"
        )
    if tags.get("xp.project") != project:
        raise TrackingError(
            f"--resume {run_id}: the run belongs to project {tags.get('xp.project')!r}, not "
            f"{project!r}; resume it with `xp train {tags.get('xp.project')} --resume {run_id}`"
        )
    crashed = status == "FAILED" and "xp.outcome" not in tags  # died of an error of its own
    if status not in RESUMABLE and not crashed:
        outcome = tags.get("xp.outcome", "?")
        raise TrackingError(
            f"--resume {run_id}: the run is finished ({status}, outcome {outcome}); only a "
            "killed run can be resumed; start a new run instead"
        )
    return run


def get_run(run_id: str) -> Any:
    """A recorded run.

    Raises:
        TrackingError: unknown run id.
    """
    import mlflow

    try:
        return mlflow.MlflowClient().get_run(run_id)
    except Exception:
        raise TrackingError(
            f"unknown run id {run_id!r} in {redact(os.environ.get('MLFLOW_TRACKING_URI', ''))}"
        ) from None


def search_runs(filter_string: str, experiment_ids: list[str] | None = None) -> list[Any]:
    """Every run (all pages) matching an MLflow search filter, in all experiments by default."""
    import mlflow

    client = mlflow.MlflowClient()
    if experiment_ids is None:
        experiment_ids = [e.experiment_id for e in client.search_experiments()]
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def delete_run(run_id: str) -> None:
    """Delete a run (MLflow's soft delete: `mlflow gc` removes it for good)."""
    import mlflow

    mlflow.MlflowClient().delete_run(run_id)


def children_of(parent_id: str) -> list[Any]:
    """The training runs of a repeat (tagged `xp.group = <parent>`)."""
    parent = get_run(parent_id)
    return search_runs(f"tags.`xp.group` = '{parent_id}'", [parent.info.experiment_id])


def metric_histories(
    run_id: str, keys: list[str] | None = None
) -> dict[str, list[tuple[int, float]]]:
    """(step, value) pairs of several metrics of one run (default: all of them), in step order."""
    import mlflow

    client = mlflow.MlflowClient()
    if keys is None:
        keys = list(client.get_run(run_id).data.metrics)
    return {
        k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k)) for k in keys
    }


def repeated_points(histories: dict[str, list[tuple[int, float]]]) -> int:
    """How many (metric, step) points occur more than once (a run logs each exactly once)."""
    return sum(len(points) - len({s for s, _ in points}) for points in histories.values())


def log_comparison(
    name: str, workspace: Workspace, result: dict, markdown: str, json_text: str, plot: str | None
) -> str:
    """Record a comparison as a run (`xp.kind = compare`) with its table and plot."""
    tracker = start_tracker(True, name, workspace, tags={
        "xp.kind": "compare", "xp.metric": result["metric"],
        "xp.compared_groups": str(len(result["groups"])),
        "mlflow.runName": f"{name} compare {result['metric']} ({len(result['groups'])} configs)",
    })  # fmt: skip
    tracker.log_text(markdown, "compare/table.md")
    tracker.log_text(json_text, "compare/table.json")
    if plot:  # (a file of the user's: this process has the store open, as `xp compare`)
        import mlflow

        mlflow.MlflowClient().log_artifact(tracker.run_id, plot, "compare")
    tracker.end("FINISHED")
    return tracker.run_id


def tag_project_run(tags: dict) -> None:
    """Under `mlflow run` the entry point's run exists before we start: record on it what the
    verb did (or why it failed)."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return
    try:
        import mlflow

        client = mlflow.MlflowClient()
        for k, v in tags.items():
            client.set_tag(run_id, k, str(v))
    except Exception:
        pass  # what was done is already on the terminal; the store is not worth a second error
