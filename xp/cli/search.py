"""`xp search`: a hyperparameter search that confirms its winner with fresh seeds (registered on
the `xp` app by `xp.cli`)."""

from __future__ import annotations

from pathlib import Path

import typer

from xp import XpError
from xp.cli.app import _check_executor, _fail, _stopped, _workspace, app
from xp.cli.terminal import out
from xp.config import split_extra_args
from xp.record.supervise import terminate_as_interrupt


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def search(
    ctx: typer.Context,
    project: str = typer.Argument(..., help="A folder under projects/ holding config.yaml."),
    space: str = typer.Option(None, "--space", help="Default: projects/<project>/search.yaml."),
    trials: int = typer.Option(20, "--trials", help="Trials to run (a grid: its size at most)."),
    method: str = typer.Option("tpe", "--method", help="grid, random or tpe (Optuna's)."),
    jobs: int = typer.Option(1, "--jobs", min=1, help="Trials (and seeds) trained at once."),
    prune: str = typer.Option("none", "--prune", help="none or median (Optuna's MedianPruner)."),
    seeds_per_trial: int = typer.Option(1, "--seeds-per-trial", help="Seeds 1..N per trial."),
    confirm_top: int = typer.Option(3, "--confirm-top", help="Best trials re-run as repeats."),
    confirm_seeds: int = typer.Option(5, "--confirm-seeds", help="Fresh seeds per confirmation."),
    metric: str = typer.Option("best/val/f1", "--metric", help="The search's validation metric."),
    storage: str = typer.Option(None, "--storage", help="Optuna storage (default: by the runs)."),
    executor: str = typer.Option("warm", "--executor", help="warm or process."),
) -> None:
    """Search a project's knobs, then confirm the best configurations on fresh seeds."""
    try:
        overrides, options = split_extra_args(list(ctx.args))
        overrides += [f"{k}={v}" for k, v in options.items()]
        _check_executor(executor, jobs)
        workspace = _workspace()
        from xp.config import load_config, metrics_for
        from xp.execute.executor import LocalExecutor

        config = load_config(project, overrides, workspace.projects)
        if metric == "best/val/f1" and "f1" not in metrics_for(config.task):
            metric = f"best/val/{config.eval.metric}"  # (a regression project's default)
        pool = LocalExecutor(jobs, cwd=workspace.root, kind=executor)
        from xp.search.study import search as run_search

        with terminate_as_interrupt(), pool:
            summary = run_search(
                config, workspace, overrides=overrides,
                space_path=Path(space or workspace.project(project) / "search.yaml").resolve(),
                trials=trials,
                method=method, prune=prune, seeds_per_trial=seeds_per_trial,
                confirm_top=confirm_top, confirm_seeds=confirm_seeds, metric=metric,
                executor=pool, storage=storage, say=lambda line: out.print(line, highlight=False),
                on_event=lambda *a: None,
            )  # fmt: skip
    except KeyboardInterrupt as e:
        _stopped(e, "the trials saved their checkpoints; run the same command to continue the "
                 "study")  # fmt: skip
    except XpError as e:
        _fail(str(e))
    from xp.report import render_markdown
    from xp.search.report import sections

    out.print(render_markdown(sections(summary), f"{project} search", []), highlight=False)
    out.print(f"report: {summary['report_dir']}", highlight=False)
