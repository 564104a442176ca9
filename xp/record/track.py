"""The one module that talks to MLflow about runs.

`start_tracker` returns an `MlflowTracker` (or a `NullTracker` with the same methods when tracking
is off), so the trainer never branches on "is tracking on". Metrics are buffered in memory and
handed in batches to a writer process (`xp.record.metric_writer`): logging every step costs
an append.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from xp import XpError
from xp.record.metric_writer import start_writer
from xp.record.store import configure_store, forbidden, redact, write_refused
from xp.record.workspace import Workspace


class TrackingError(XpError):
    """Unknown run id, unreachable store, or a run that cannot be resumed."""


def experiment_for(project: str, workspace: Workspace) -> str:
    """Experiment id for a project's runs (created on first use, artifacts under the repo)."""
    import mlflow

    if os.environ.get("MLFLOW_EXPERIMENT_ID"):
        return os.environ["MLFLOW_EXPERIMENT_ID"]
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or project
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if os.environ["MLFLOW_TRACKING_URI"] == workspace.default_store:
        location = workspace.default_artifacts.resolve().as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # another seed created it a moment ago
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


# how each database says that a row with that key exists already
UNIQUE_VIOLATIONS = ("UNIQUE constraint failed", "duplicate key value violates unique constraint",
                     "Duplicate entry")  # fmt: skip


class MlflowTracker:
    """An MLflow run: tags and params at once, metrics buffered, artifacts and models."""

    enabled = True
    detached = False  # not MLflow's active run: ended through the client

    def __init__(self, run_id: str, flush_every: int = 1000, flush_seconds: float = 2.0):
        import mlflow

        self._mlflow = mlflow
        self._client = mlflow.MlflowClient()
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

    # -- params, tags -------------------------------------------------------------------------
    def log_params(self, params: dict[str, Any]) -> None:
        """Log params; keys the run already has (e.g. `mlflow run -P`) are kept as they are."""
        from mlflow.entities import Param

        existing = self._client.get_run(self.run_id).data.params
        new = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in existing]
        for i in range(0, len(new), 100):
            self._client.log_batch(self.run_id, params=new[i : i + 100])

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items() if v is not None]
        for i in range(0, len(items), 100):
            self._client.log_batch(self.run_id, tags=items[i : i + 100])

    def tags(self) -> dict[str, str]:
        """The run's current tags."""
        return self._client.get_run(self.run_id).data.tags

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
        """Block until every buffered metric is in the store."""
        self._send()
        self._writer.wait()

    def metric_history(self, key: str) -> list[tuple[int, float]]:
        """(step, value) pairs of one metric, in step order."""
        self.flush()
        hist = self._client.get_metric_history(self.run_id, key)
        return sorted((m.step, m.value) for m in hist)

    # -- artifacts, inputs, models ------------------------------------------------------------
    def log_artifacts(self, local_dir: Path, artifact_path: str) -> None:
        self._client.log_artifacts(self.run_id, str(local_dir), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._client.log_text(self.run_id, text, artifact_file)

    def log_input(self, name: str, path: str, md5: str, context: str) -> None:
        """Record a dataset read by the run, its digest being the DVC md5."""
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MLflow warns that two local sources match
            source = resolve_dataset_source(path)
        dataset = MetaDataset(source, name=name, digest=md5)
        for attempt in range(5):
            try:
                self._mlflow.log_input(dataset, context=context)
                return
            except Exception as e:
                # MLflow checks for the experiment's dataset, then inserts it: two seeds starting
                # at once both insert, and the second hits the UNIQUE constraint. Once the row
                # exists, a retry links to it. (SQLite, PostgreSQL, MySQL; through a server too)
                if not any(m in str(e) for m in UNIQUE_VIOLATIONS) or attempt == 4:
                    raise
                time.sleep(0.1 * (attempt + 1))

    def log_model(self, model: Any, flavor: str, **kwargs: Any) -> str:
        """Log a model named `model` with the given flavor; returns its model URI.

        Requirements are the installed versions, given explicitly: MLflow's inference of them
        re-imports the model in a subprocess, which costs seconds on every run.
        """
        from importlib.metadata import version

        import xp

        if flavor == "transformers":
            import mlflow.transformers as mod

            packages = ("torch", "transformers", "tokenizers", "safetensors")
        else:  # pytorch, or pyfunc: a torch model behind a python_model (`xp.train.served`)
            import mlflow.pyfunc

            if flavor == "pytorch":  # (~0.4 s of imports a pyfunc model does not need)
                import mlflow.pytorch
            mod = mlflow.pyfunc if flavor == "pyfunc" else mlflow.pytorch
            packages = ("torch", "numpy", "pandas", *kwargs.pop("extra_packages", ()))
            if flavor == "pyfunc":
                kwargs = {"python_model": model, **kwargs}
            kwargs.setdefault("code_paths", [str(Path(xp.__file__).parent)])  # DigitsCNN's code
            # pickled with its code (code_paths), not MLflow 3's default of a torch.export
            # program, which traces the model again on every run (~1.5 s of each seed's record)
            if flavor == "pytorch":
                kwargs.setdefault("serialization_format", "pickle")
        reqs = [f"{p}=={version(p).split('+')[0]}" for p in packages]
        with warnings.catch_warnings(), _installed_requirements():
            warnings.simplefilter("ignore")
            args = () if flavor == "pyfunc" else (model,)
            info = mod.log_model(*args, name="model", pip_requirements=reqs, **kwargs)
        return info.model_uri

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
            if self.detached:
                self._client.set_terminated(self.run_id, status)
            else:
                self._mlflow.end_run(status=status)


@contextlib.contextmanager
def _installed_requirements() -> Iterator[None]:
    """MLflow's check that a model's requirements are installed (as it is saved, and as it is
    loaded back to validate the input example), skipped: xp's are the installed versions
    (`MlflowTracker.log_model`), so it cannot warn, and it first maps every installed
    distribution's files to modules (~1 s each time)."""
    import mlflow.pyfunc
    import mlflow.utils.environment

    name = "warn_dependency_requirement_mismatches"
    mods = [m for m in (mlflow.utils.environment, mlflow.pyfunc) if hasattr(m, name)]
    checks = [getattr(m, name) for m in mods]
    for m in mods:
        setattr(m, name, lambda requirements: None)
    try:
        yield
    finally:
        for m, check in zip(mods, checks, strict=True):
            setattr(m, name, check)


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
) -> Tracker:
    """Open the run that records a training job.

    Under `mlflow run`, the run MLflow created (`MLFLOW_RUN_ID`) is used. With `resume_run_id`,
    that run is reopened and continues where it stopped. `detached`: the run is not MLflow's
    active run (a search's study run, under which repeats open runs of their own); such a
    tracker logs no inputs or models.

    Raises:
        TrackingError: `resume_run_id` names no run in the store.
    """
    if not enabled:
        return NullTracker()
    workspace = Workspace.of(workspace)
    configure_store(workspace)
    import mlflow

    run_id = resume_run_id or os.environ.get("MLFLOW_RUN_ID")
    if run_id:
        try:
            mlflow.MlflowClient().get_run(run_id)
        except Exception:
            raise TrackingError(
                f"unknown run id {run_id!r} in {redact(os.environ['MLFLOW_TRACKING_URI'])}; "
                "list runs with `mlflow ui` or `mlflow runs list`"
            ) from None
        run = mlflow.MlflowClient().get_run(run_id) if detached else mlflow.start_run(run_id=run_id)
        if detached and run.info.status != "RUNNING":
            mlflow.MlflowClient().update_run(run_id, status="RUNNING")
    else:
        experiment_id = experiment_for(project, workspace)
        try:
            if detached:
                from mlflow.tracking.context.registry import resolve_tags  # (user, source)

                run = mlflow.MlflowClient().create_run(
                    experiment_id, tags=resolve_tags(tags or {}), run_name=run_name
                )
            else:
                run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags)
        except Exception as e:
            if not forbidden(e):
                raise
            raise TrackingError(write_refused(experiment_id)) from None
    tracker = MlflowTracker(run.info.run_id)
    tracker.detached = detached
    tracker.resumed = resume_run_id is not None
    if run_id and tags:
        tracker.set_tags(tags)
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
    if plot:
        import mlflow

        mlflow.log_artifact(plot, "compare")
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
