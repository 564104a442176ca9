"""The `xp` command line: one function per verb; parses, calls the library, prints.

A user's mistake (bad config, missing data, unknown run id) prints one line and exits non-zero,
never a traceback. torch and mlflow are imported only by the verbs that need them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer
from rich.console import Console

from xp import XpError

app = typer.Typer(
    help="xp: fine-tuning runs you can trust and re-run (MLflow + DVC).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(soft_wrap=True)  # never break a run id or a path across lines
err = Console(stderr=True, soft_wrap=True)


@app.callback()
def _group() -> None:
    """xp: fine-tuning runs you can trust and re-run (MLflow + DVC)."""


EXIT_USER_ERROR = 2
EXIT_FAILED_RUN = 1
EXIT_KILLED = {"SIGINT": 130, "SIGTERM": 143}


def _fail(message: str, code: int = EXIT_USER_ERROR) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    _tag_mlflow_project_run(message)
    raise typer.Exit(code)


def _tag_mlflow_project_run(message: str) -> None:
    """Under `mlflow run` the run exists before we start: say on it why it failed."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return
    try:
        import mlflow

        mlflow.MlflowClient().set_tag(run_id, "xp.failure", message)
        mlflow.MlflowClient().set_tag(run_id, "xp.outcome", "failed")
    except Exception:
        pass  # the message is already on stderr; the store is not worth a second error


def split_extra_args(args: list[str]) -> tuple[list[str], dict[str, str]]:
    """Split CLI leftovers into `key=value` overrides and `--key value` options.

    `mlflow run -P optim.lr=3e-4` arrives as `--optim.lr 3e-4`; both forms become overrides.
    """
    overrides, options = [], {}
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("--"):
            key, sep, value = a[2:].partition("=")
            if not sep:
                if i + 1 >= len(args):
                    raise XpError(f"option {a} needs a value")
                value, i = args[i + 1], i + 1
            options[key] = value
        else:
            overrides.append(a)
        i += 1
    return overrides, options


def _repo_root() -> Path:
    from xp.provenance import find_repo_root

    return find_repo_root(Path.cwd())


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def train(
    ctx: typer.Context,
    project: str = typer.Argument(..., help="A folder under projects/ holding config.yaml."),
    resume: str = typer.Option(None, "--resume", help="Run id of a killed run to continue."),
    no_track: bool = typer.Option(False, "--no-track", help="Record nothing (null tracker)."),
) -> None:
    """Fine-tune one seed of one configuration: `xp train digits seed=2 optim.lr=3e-4`."""
    try:
        overrides, options = split_extra_args(list(ctx.args))
        resume = options.pop("resume", resume)
        overrides += [f"{k}={v}" for k, v in options.items()]
        root = _repo_root()
        config = _resolve_config(project, overrides, root, resume)
        from xp.train import train as run_train

        progress = _Progress()
        try:
            result = run_train(
                config, root, overrides=overrides, track=not no_track, resume=resume,
                events=progress,
            )  # fmt: skip
        finally:
            progress.close()
    except XpError as e:
        _fail(str(e))
    _print_result(result)
    if result.status == "KILLED":
        raise typer.Exit(EXIT_KILLED.get(result.signal, 130))
    if result.outcome == "failed":
        raise typer.Exit(EXIT_FAILED_RUN)


def _resolve_config(project: str, overrides: list[str], root: Path, resume: str | None):
    """The config to train: the project's with overrides, or a resumed run's recorded one."""
    from xp.config import load_config

    config = load_config(project, overrides, root / "projects")
    if resume is None:
        return config
    import yaml

    from xp.config import config_hash, validate
    from xp.track import configure_store, recorded_text

    configure_store(root)
    recorded = validate(yaml.safe_load(recorded_text(resume, "config.yaml")))
    if overrides and config_hash(recorded) != config_hash(config):
        raise XpError(
            f"run {resume} was trained with another config (hash {config_hash(recorded)}); "
            "resume it without overrides"
        )
    return recorded


class _Progress:
    """Draws training progress: a bar on a terminal, evaluation lines everywhere."""

    def __init__(self) -> None:
        self._bar = None
        self._task = None

    def __call__(self, kind: str, info: dict) -> None:
        if kind == "start":
            where = "tracking off" if not info["tracking"] else os.environ["MLFLOW_TRACKING_URI"]
            out.print(f"run [bold]{info['run_id']}[/] ({where})", highlight=False)
        elif kind == "fit":
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

            self._bar = Progress(
                "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                TimeRemainingColumn(), console=out, transient=True, disable=not out.is_terminal,
            )  # fmt: skip
            self._task = self._bar.add_task("training", total=info["total"], completed=info["step"])
            self._bar.start()
        elif kind == "step" and self._bar is not None:
            self._bar.update(self._task, completed=info["step"],
                             description=f"loss {info['loss']:.4f}")  # fmt: skip
        elif kind == "eval":
            shown = "  ".join(f"{k} {v:.4f}" for k, v in info["metrics"].items())
            out.print(f"step {info['step']:>5}  val  {shown}", highlight=False, soft_wrap=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _print_result(result) -> None:
    if result.status == "KILLED":
        err.print(f"[yellow]killed:[/] {result.message}", highlight=False)
        return
    line = "  ".join(f"{k} {v:.4f}" for k, v in result.test.items())
    out.print(f"test  {line}", highlight=False, soft_wrap=True)
    if result.outcome == "failed":
        err.print(f"[bold red]failed:[/] run {result.run_id}: {result.message}", highlight=False)
    else:
        out.print(f"[green]{result.outcome}[/] run {result.run_id}", highlight=False)


def _quiet_libraries() -> None:
    """Keep library chatter (store creation, model cards, progress bars) off the user's screen."""
    import logging

    for name in ("mlflow", "alembic", "transformers", "dvc", "git"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.ERROR)  # "Creating tables..."
    logging.getLogger("mlflow.transformers").setLevel(logging.ERROR)  # "no model card on the hub"
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def main() -> None:
    """Console-script entry point."""
    _quiet_libraries()
    app(prog_name="xp")


if __name__ == "__main__":  # `python -m xp.cli`, as MLproject runs it
    sys.exit(main())
