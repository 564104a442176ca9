"""What a run's writes are, as MLflow calls: the writer (`xp.record.metric_writer`) performs them.

A training process opens no store of its own: its tracker (`xp.record.track.MlflowTracker`) sends
each write (tags, params, texts, inputs, artifacts, the model, the end) to the writer in order,
behind the metrics logged before it, and asks it for what it reads (the run's tags). So the
store's modules (SQLAlchemy, MLflow's schema, alembic: ~1 s of CPU) and its first open are paid
by the writer, on another core, while the trainer sets up; and every write of a run leaves one
process in one order.

`perform(op, uri, run_id, args)` is that: one write, or one read whose answer goes back (JSON).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from xp import XpError
from xp.record.store import configure_store, forbidden, redact, write_refused
from xp.record.workspace import Workspace

# how each database says that a row with that key exists already
UNIQUE_VIOLATIONS = ("UNIQUE constraint failed", "duplicate key value violates unique constraint",
                     "Duplicate entry")  # fmt: skip


class OpError(XpError):
    """A write the store refused, said in one line for the user (`kind`: the error the tracker
    raises, `TrackingError` or `StoreError`)."""

    def __init__(self, message: str, kind: str = "TrackingError"):
        super().__init__(message)
        self.kind = kind


EXPERIMENT_ENV = ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")  # where a new run goes


def experiment_for(project: str, workspace: Workspace, env: dict[str, str] | None = None) -> str:
    """Experiment id for a project's runs (created on first use, artifacts under the repo).
    `env`: the asking process's `EXPERIMENT_ENV` (default: this one's)."""
    import mlflow

    env = {k: os.environ[k] for k in EXPERIMENT_ENV if k in os.environ} if env is None else env
    if env.get("MLFLOW_EXPERIMENT_ID"):
        return env["MLFLOW_EXPERIMENT_ID"]
    name = env.get("MLFLOW_EXPERIMENT_NAME") or project
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


def perform(op: str, uri: str, run_id: str | None, args: dict[str, Any]) -> Any:
    """Do one of the run's writes (or reads) in this process; returns what a read answers.

    Raises:
        OpError: a refusal the user can act on (unknown run, no write permission, a store that
            cannot be opened); anything else as MLflow raised it.
    """
    import mlflow

    os.environ["MLFLOW_TRACKING_URI"] = uri  # (the writer may have started before it was set)
    if op == "start":
        return _start(uri, **args)
    client = mlflow.MlflowClient(uri)
    if op == "log_params":
        _log_new_params(client, run_id, args["params"])
    elif op == "set_tags":
        _batched(client, run_id, "tags", args["tags"])
    elif op == "tags":
        return client.get_run(run_id).data.tags
    elif op == "metric_history":
        return sorted((m.step, m.value) for m in client.get_metric_history(run_id, args["key"]))
    elif op == "log_text":
        client.log_text(run_id, args["text"], args["artifact_file"])
    elif op == "log_artifacts":
        client.log_artifacts(run_id, args["local_dir"], args["artifact_path"])
    elif op == "log_input":
        _log_input(client, run_id, **args)
    elif op == "log_model":
        return _log_model(run_id, Path(args["payload"]))
    elif op == "end":
        _end(client, run_id, args["status"])
    else:
        raise ValueError(f"unknown op {op!r}")
    return None


def _log_new_params(client: Any, run_id: str, params: dict[str, str]) -> None:
    """Log the params the run does not have yet (`mlflow run -P` ones are kept as they are)."""
    if params:
        existing = client.get_run(run_id).data.params
        _batched(client, run_id, "params", {k: v for k, v in params.items() if k not in existing})


def _batched(client: Any, run_id: str, kind: str, items: dict[str, str]) -> None:
    from mlflow.entities import Param, RunTag

    make = Param if kind == "params" else RunTag
    rows = [make(k, v) for k, v in items.items()]
    for i in range(0, len(rows), 100):
        client.log_batch(run_id, **{kind: rows[i : i + 100]})


def _start(uri: str, project: str, root: str, run_id: str | None, detached: bool,
           tags: dict[str, str], run_name: str | None, argv: list[str], env: dict[str, str],
           params: dict[str, str]) -> str:  # fmt: skip
    """Open the store (creating its tables: a store that cannot be opened is one line), then the
    run: the given one (`mlflow run`'s, or one to resume), or a new one in the project's
    experiment (or the one `env`, the asking process's `EXPERIMENT_ENV`, names). Not detached,
    it becomes this thread's active MLflow run (what `log_model` logs to), as it was the
    trainer's."""
    import mlflow

    from xp.record.store_lock import StoreError

    try:
        configure_store(Workspace(Path(root)))
    except StoreError as e:
        raise OpError(str(e), "StoreError") from None
    client = mlflow.MlflowClient(uri)
    if run_id:
        try:
            client.get_run(run_id)
        except Exception:
            raise OpError(f"unknown run id {run_id!r} in {redact(uri)}; list runs with `mlflow ui` "
                          "or `mlflow runs list`") from None  # fmt: skip
        if detached:
            if client.get_run(run_id).info.status != "RUNNING":
                client.update_run(run_id, status="RUNNING")
        else:
            _activate(run_id)
        if tags:
            _batched(client, run_id, "tags", tags)
        _log_new_params(client, run_id, params)
        return run_id
    experiment_id = experiment_for(project, Workspace(Path(root)), env)
    try:
        run = client.create_run(experiment_id, tags=_context(tags, argv), run_name=run_name)
    except Exception as e:
        if not forbidden(e):
            raise
        raise OpError(write_refused(experiment_id)) from None
    _batched(client, run.info.run_id, "params", params)  # (before anything else of the run's)
    if not detached:
        _activate(run.info.run_id)
    return run.info.run_id


def _context(tags: dict[str, str], argv: list[str]) -> dict[str, str]:
    """`tags` with MLflow's context tags (user, source name and type, git commit), as
    `mlflow.start_run` adds them, for the process that asked (`argv`: its program), not the
    writer's."""
    import sys

    from mlflow.tracking.context.registry import resolve_tags

    own = sys.argv[:1]
    if argv == own:
        return resolve_tags(tags)
    sys.argv[:1] = argv  # (MLflow's source name and git commit come from sys.argv[0])
    try:
        return resolve_tags(tags)
    finally:
        sys.argv[:1] = own


def _activate(run_id: str) -> None:
    """Make `run_id` this thread's active MLflow run (on top of another one, if any: a thread
    writer may serve a search's study run and a confirmation's parent)."""
    import mlflow

    active = mlflow.active_run()
    if active is None or active.info.run_id != run_id:
        mlflow.start_run(run_id=run_id, nested=active is not None)


def _end(client: Any, run_id: str, status: str) -> None:
    import mlflow

    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        mlflow.end_run(status=status)
    else:
        client.set_terminated(run_id, status)


def _log_input(client: Any, run_id: str, name: str, path: str, md5: str, context: str) -> None:
    """Record a dataset read by the run, its digest being the DVC md5 (as `mlflow.log_input`)."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow warns that two local sources match
        source = resolve_dataset_source(path)
    dataset = MetaDataset(source, name=name, digest=md5)
    tag = InputTag(MLFLOW_DATASET_CONTEXT, context)
    inputs = [DatasetInput(dataset._to_mlflow_entity(), [tag])]
    for attempt in range(5):
        try:
            client.log_inputs(run_id, datasets=inputs)
            return
        except Exception as e:
            # MLflow checks for the experiment's dataset, then inserts it: two seeds starting
            # at once both insert, and the second hits the UNIQUE constraint. Once the row
            # exists, a retry links to it. (SQLite, PostgreSQL, MySQL; through a server too)
            if not any(m in str(e) for m in UNIQUE_VIOLATIONS) or attempt == 4:
                raise
            time.sleep(0.1 * (attempt + 1))


class Build:
    """A model the writer makes, from a class named by its path and its arguments: the trainer
    hands over a torch model without importing the class that wraps it for MLflow
    (`xp.train.served`, which imports MLflow's pyfunc: ~1.5 s of a run that needs none)."""

    def __init__(self, target: str, *args: Any):
        self.target, self.args = target, args

    def make(self) -> Any:
        import importlib

        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)(*self.args)


def save_payload(path: Path, model: Any, flavor: str, kwargs: dict[str, Any]) -> Path:
    """What the trainer hands the writer to log: the model and how, pickled to `path` (read back
    by `_log_model`, in the writer, which has torch imported by then)."""
    with open(path, "wb") as f:
        pickle.dump({"model": model, "flavor": flavor, "kwargs": kwargs}, f, protocol=5)
    return path


def _log_model(run_id: str, payload: Path) -> str:
    """Log the model `save_payload` wrote (in the writer)."""
    with open(payload, "rb") as f:
        given = pickle.load(f)
    return log_model(run_id, given["model"], given["flavor"], given["kwargs"])


def log_model(run_id: str, model: Any, flavor: str, kwargs: dict[str, Any]) -> str:
    """Log `model` (or what a `Build` makes) as the run's `model` with the given flavor, in this
    process; returns its model URI.

    Requirements are the installed versions, given explicitly: MLflow's inference of them
    re-imports the model in a subprocess, which costs seconds on every run.
    """
    from importlib.metadata import version

    import xp

    kwargs = dict(kwargs)
    if flavor == "transformers":
        import mlflow.transformers as mod

        packages: tuple[str, ...] = ("torch", "transformers", "tokenizers", "safetensors")
    else:  # pytorch, or pyfunc: a torch model behind a python_model (`xp.train.served`)
        import mlflow.pyfunc

        if flavor == "pytorch":  # (~0.4 s of imports a pyfunc model does not need)
            import mlflow.pytorch
        mod = mlflow.pyfunc if flavor == "pyfunc" else mlflow.pytorch
        packages = ("torch", "numpy", "pandas", *kwargs.pop("extra_packages", ()))
        kwargs.setdefault("code_paths", [str(Path(xp.__file__).parent)])  # DigitsCNN's code
        # pickled with its code (code_paths), not MLflow 3's default of a torch.export
        # program, which traces the model again on every run (~1.5 s of each seed's record)
        if flavor == "pytorch":
            kwargs.setdefault("serialization_format", "pickle")
    reqs = [f"{p}=={version(p).split('+')[0]}" for p in packages]
    _activate(run_id)  # (the flavors log to the active run; it stays so until `end`)
    with warnings.catch_warnings(), _installed_requirements():
        warnings.simplefilter("ignore")
        if isinstance(model, Build):
            model = model.make()
        if flavor == "pyfunc":
            kwargs["python_model"] = model
        args = () if flavor == "pyfunc" else (model,)
        info = mod.log_model(*args, name="model", pip_requirements=reqs, **kwargs)
    return info.model_uri


@contextlib.contextmanager
def _installed_requirements() -> Iterator[None]:
    """MLflow's check that a model's requirements are installed (as it is saved, and as it is
    loaded back to validate the input example), skipped: xp's are the installed versions
    (`_log_model`), so it cannot warn, and it first maps every installed distribution's files to
    modules (~1 s each time)."""
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
