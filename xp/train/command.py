"""`xp train`, the command: from its arguments to a trained run, its lines and its exit code.

The CLI's `xp train` and each seed of a warm worker (`xp.execute.worker`) run it the same way, so
a seed's log holds what `xp train` prints. Nothing here imports torch before the config has said
which numerics profile to load it under.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from xp import XpError
from xp.config import (
    ProjectConfig,
    ScriptConfig,
    config_hash,
    load_config,
    split_extra_args,
    validate,
)
from xp.record.workspace import Workspace
from xp.train.console import (
    EXIT_FAILED_RUN,
    EXIT_KILLED,
    EXIT_USER_ERROR,
    TrainProgress,
    out,
    print_error,
    print_result,
)

USAGE = "Usage: xp train PROJECT [KEY=VALUE]... [--resume RUN_ID] [--no-track]"


def run(
    project: str,
    extra_args: list[str],
    *,
    resume: str | None = None,
    track: bool = True,
    group: str | None = None,
    cwd: str | Path = ".",
) -> int:
    """Train one seed as `xp train <project> <extra_args>` does; returns its exit code.

    Args:
        project: a folder under the workspace's projects/.
        extra_args: `key=value` overrides and `--key value` options (`--resume`, `--group`, or
            an override as `mlflow run -P` passes it).
        resume: run id of a killed run to continue.
        track: False for the null tracker (`--no-track`).
        group: the parent repeat run's id.
        cwd: a folder inside the workspace.

    Returns:
        0, or 1 for a failed run, 2 for a user's mistake (one `error:` line), 130/143 for a run
        stopped by Ctrl-C/SIGTERM.
    """
    from xp.record.supervise import watch_parent

    watch_parent()  # a seed of a repeat stops, checkpointed, if its parent dies
    try:
        overrides, options = split_extra_args(list(extra_args))
        resume = options.pop("resume", resume)
        group = options.pop("group", group)
        overrides += [f"{k}={v}" for k, v in options.items()]
        workspace = Workspace.find(Path(cwd).resolve())
        config = resolve_config(project, overrides, workspace, resume)
        from xp.record import numerics

        numerics.apply(config.train.numerics)  # before torch is imported: kernels pick at import
        if track and not isinstance(config, ScriptConfig):
            from xp.record.metric_writer import start_writer

            start_writer(training=True)  # it imports MLflow and opens the store while we import
        progress = TrainProgress()
        try:
            if isinstance(config, ScriptConfig):
                from xp.train.script import train_script

                result = train_script(config, workspace, overrides=overrides, track=track,
                                      resume=resume, group=group, events=progress)  # fmt: skip
            else:
                from xp.train.loop import train
                from xp.train.pruning import hook_from_env

                result = train(
                    config, workspace, overrides=overrides, track=track, resume=resume,
                    group=group, events=progress,
                    should_stop=hook_from_env(),  # a search's trial: its pruner
                )  # fmt: skip
        finally:
            progress.close()
    except XpError as e:
        from xp.record.track import tag_project_run

        print_error(str(e))
        tag_project_run({"xp.failure": str(e), "xp.outcome": "failed"})
        return EXIT_USER_ERROR
    print_result(result)
    if result.status == "KILLED":
        return exit_code_of_kill(result.signal)
    if result.outcome == "failed" or result.status == "FAILED":  # (a script's crash too)
        return EXIT_FAILED_RUN
    return 0


def exit_code_of_kill(name: str) -> int:
    """130/143 for a run stopped by Ctrl-C/SIGTERM (a stop, for every seed of a repeat), 128 + the
    signal's number for a script killed by another one (SIGKILL: 137, the seed alone)."""
    import signal

    if name in EXIT_KILLED:
        return EXIT_KILLED[name]
    try:
        return 128 + signal.Signals[name].value
    except KeyError:
        return 130


def run_args(args: list[str]) -> int:
    """`xp train` from the words after it (`<project> [key=value ...] [--no-track] [--option
    value ...]`), as a warm worker is given each seed."""
    if "--help" in args or "-h" in args:
        out.print(USAGE, highlight=False, markup=False)
        return 0
    if not args or args[0].startswith("-"):
        print_error(f"xp train needs a project first: {USAGE.removeprefix('Usage: ')}")
        return EXIT_USER_ERROR
    rest = [a for a in args[1:] if a != "--no-track"]
    return run(args[0], rest, track=len(rest) == len(args) - 1)


def resolve_config(project: str, overrides: list[str], workspace: Workspace,
                   resume: str | None) -> ProjectConfig:  # fmt: skip
    """The config to train: the project's with overrides, or a resumed run's recorded one
    (`xp train --resume`; nothing here imports torch, which the numerics profile must precede).

    Raises:
        XpError: a bad config, an unknown or unresumable run, or overrides that change a
            resumed run's config.
    """
    config = load_config(project, overrides, workspace.projects)
    if resume is None:
        return config
    from xp.record.artifacts import recorded_text
    from xp.record.store import configure_store
    from xp.record.track import resumable_run

    configure_store(workspace)
    killed = resumable_run(resume, project)  # reads only: a wrong id changes nothing
    try:
        recorded = validate(yaml.safe_load(recorded_text(resume, "config.yaml")))
    except XpError:  # killed before its config was recorded: the command line's, if the same
        if killed.data.tags.get("xp.config_hash") != config_hash(config):
            raise
        return config
    if overrides and config_hash(recorded) != config_hash(config):
        raise XpError(
            f"run {resume} was trained with another config (hash {config_hash(recorded)}); "
            "resume it without overrides"
        )
    return recorded
