"""The `xp` command line: one function per verb; parses, calls the library, prints.

A user's mistake (bad config, missing data, unknown run id) prints one line and exits non-zero,
never a traceback. torch and mlflow are imported only by the verbs that need them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from xp.record.workspace import Workspace

from xp import XpError
from xp.cli.terminal import (
    SeedProgress,
    err,
    out,
    print_checkup,
    print_gates,
    print_ranking,
    print_reproduction,
    print_summary,
    warn,
)
from xp.config import metric_key, split_extra_args
from xp.record.supervise import leave, terminate_as_interrupt
from xp.record.track import tag_project_run
from xp.train.console import EXIT_FAILED_RUN, EXIT_KILLED, EXIT_USER_ERROR

app = typer.Typer(
    help="xp: fine-tuning runs you can trust and re-run (MLflow + DVC).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _group() -> None:
    """xp: fine-tuning runs you can trust and re-run (MLflow + DVC)."""


def _fail(message: str, code: int = EXIT_USER_ERROR) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    tag_project_run({"xp.failure": message, "xp.outcome": "failed"})
    raise typer.Exit(code)


def _workspace() -> Workspace:
    """The repository the command runs in: found once, here, and passed down."""
    from xp.record.workspace import Workspace

    return Workspace.find(Path.cwd())


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def train(
    ctx: typer.Context,
    project: str = typer.Argument(..., help="A folder under projects/ holding config.yaml."),
    resume: str = typer.Option(None, "--resume", help="Run id of a killed run to continue."),
    no_track: bool = typer.Option(False, "--no-track", help="Record nothing (null tracker)."),
    group: str = typer.Option(None, "--group", hidden=True, help="Parent repeat run id."),
) -> None:
    """Fine-tune one seed of one configuration: `xp train digits seed=2 optim.lr=3e-4`."""
    from xp.train.command import run

    code = run(project, list(ctx.args), resume=resume, track=not no_track, group=group)
    if code:
        raise typer.Exit(code)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def repeat(
    ctx: typer.Context,
    project: str = typer.Argument(..., help="A folder under projects/ holding config.yaml."),
    seeds: str = typer.Option("5", "--seeds", help="A count (5: seeds 1..5) or a list (1,2,7)."),
    jobs: int = typer.Option(1, "--jobs", min=1, help="Seeds trained at once."),
    executor: str = typer.Option(
        "warm",
        "--executor",
        help="warm: workers that import once and train seed after seed; "
        "process: a new process per seed; ray: warm workers on a Ray cluster's actors.",
    ),
    ray_address: str = typer.Option(
        "auto", "--ray-address", help="--executor ray: auto, host:port or ray://host:port."
    ),
    cpus_per_seed: float = typer.Option(
        1.0, "--cpus-per-seed", help="--executor ray: CPUs Ray reserves for each seed."
    ),
    gpus_per_seed: float = typer.Option(
        None,
        "--gpus-per-seed",
        help="A share of one GPU (0.25: four seeds per GPU) or whole GPUs (2) per seed. "
        "Default: the --jobs seeds take the GPUs in turn.",
    ),
    baseline: str = typer.Option(None, "--baseline", help="A repeat run id, or a number."),
    metric: str = typer.Option(None, "--metric", help="Default: test/<eval.metric>."),
    alpha: float = typer.Option(0.05, "--alpha", min=0.0001, max=0.49, help="Significance level."),
    min_effect: float = typer.Option(0.0, "--min-effect", help="Smallest improvement that counts."),
    folds: int = typer.Option(
        None, "--folds", help="K-fold over train + validation pooled (test fixed), x --seeds."
    ),
    resamples: int = typer.Option(
        None, "--resamples", help="Random re-splits of train + validation (test fixed), x --seeds."
    ),
    split_seed: int = typer.Option(
        None, "--split-seed", help="--folds/--resamples: their seed (default 1)."
    ),
) -> None:
    """Train several seeds of one configuration and say whether the result holds; with --folds
    or --resamples, every seed on every split, and where the variance comes from."""
    try:
        overrides, options = split_extra_args(list(ctx.args))
        raw = options.pop("split_seed", None)  # (`mlflow run -P split_seed=2`)
        if raw is not None and not raw.isdigit():
            raise XpError(f"--split-seed {raw}: give a seed >= 0")
        split_seed = int(raw) if raw is not None else split_seed
        overrides += [f"{k}={v}" for k, v in options.items()]
        _check_executor(executor, jobs, cluster=True)
        workspace = _workspace()
        from xp.config import load_config
        from xp.execute import for_repeat

        config = load_config(project, overrides, workspace.projects)
        seed_executor = for_repeat(config, workspace, executor, jobs, gpus_per_seed, ray_address,
                                   cpus_per_seed)  # fmt: skip
        # the workers' server starts now, before our own imports (scipy, MLflow, torch: ~5 s)
        seed_executor.warm_up(1, config.train.numerics)
        from xp.repeat import repeat as run_repeat

        progress = SeedProgress()
        try:
            with terminate_as_interrupt(), seed_executor:
                summary = run_repeat(
                    config, workspace, overrides=overrides, seeds_spec=seeds,
                    executor=seed_executor, metric=metric, baseline=baseline,
                    alpha=alpha, min_effect=min_effect, on_event=progress,
                    on_parent=progress.parent, folds=folds, resamples=resamples,
                    split_seed=split_seed,
                )  # fmt: skip
        finally:
            progress.close()
    except KeyboardInterrupt as e:
        _stopped(e, "the seeds saved their checkpoints and ended KILLED; run the same command "
                 "to resume")  # fmt: skip
    except XpError as e:
        _fail(str(e))
    print_summary(summary)


@app.command()
def report(run_id: str = typer.Argument(..., help="A repeat run id.")) -> None:
    """Rebuild a repeat's reliability report from the tracking store alone."""
    try:
        from xp.record.store import configure_store
        from xp.repeat import rebuild_report

        workspace = _workspace()
        configure_store(workspace)
        summary = rebuild_report(run_id, workspace)
    except XpError as e:
        _fail(str(e))
    print_summary(summary)


@app.command()
def ensemble(
    run_id: str = typer.Argument(..., help="A repeat run id."),
    metric: str = typer.Option(None, "--metric", help="Default: the repeat's metric."),
    alpha: float = typer.Option(0.05, "--alpha", min=0.0001, max=0.49, help="Significance level."),
) -> None:
    """Average a repeat's seeds' test answers: the ensemble against its representative seed."""
    try:
        from xp.ensemble import evaluate, record
        from xp.record.store import configure_store

        configure_store(_workspace())
        result = evaluate(run_id, metric and metric_key(metric), alpha)
        record(result)
    except XpError as e:
        _fail(str(e))
    _print_ensemble(result)


def _print_ensemble(r: dict, recorded: bool = True) -> None:
    """`xp ensemble`'s table: the ensemble, the representative seed, the seeds' mean, the
    difference with its interval and p."""
    from xp.cli.terminal import print_table

    def ci(pair: list[float]) -> str:
        return f"[{pair[0]:.4f}, {pair[1]:.4f}]"

    low, high = r["diff_ci"]
    rows = [
        [f"ensemble of seeds {','.join(map(str, r['seeds']))}", f"{r['ensemble']:.4f}",
         ci(r["ensemble_ci"])],
        [f"representative seed {r['representative']}", f"{r['representative_value']:.4f}",
         ci(r["representative_ci"])],
        [f"seeds' mean (n={len(r['seeds'])})", f"{r['seeds_mean']:.4f}", ""],
        ["ensemble - representative", f"{r['diff']:+.4f}", f"[{low:+.4f}, {high:+.4f}]"],
    ]  # fmt: skip
    title = f"{r['metric']} on {r['n_test']} test examples (95% bootstrap intervals)"
    print_table(title, ["model", r["metric"], "95% CI"], rows)
    word = "beats" if r["beats"] else "does not beat"
    where = f"; recorded on repeat run {r['group']} (xp.ensemble.*)" if recorded else ""
    out.print(f"the ensemble {word} its representative seed: one-sided paired bootstrap "
              f"p={r['p_value']:.4g} (alpha {r['alpha']:g}, {r['resamples']} resamples)"
              f"{where}", highlight=False)  # fmt: skip


@app.command()
def diagnose(
    run_id: str = typer.Argument(..., help="A training run id or a repeat run id."),
    fmt: str = typer.Option("text", "--format", help="text or json."),
) -> None:
    """Why a run or a repeat is good or bad: data audit, overfitting, monitor events."""
    if fmt not in ("text", "json"):
        _fail(f"--format {fmt}: use text or json")
    try:
        from xp.checkup import checkup
        from xp.record.store import configure_store

        configure_store(_workspace())
        found = checkup(run_id)
    except XpError as e:
        _fail(str(e))
    print_checkup(found, fmt)


@app.command()
def compare(
    project: str = typer.Option(None, "--project", help="Only runs of this project."),
    experiment: str = typer.Option(None, "--experiment", help="Only runs of this experiment."),
    metric: str = typer.Option("test/f1", "--metric", help="The metric to rank by."),
    filter_string: str = typer.Option(None, "--filter", help="An MLflow search filter."),
    fmt: str = typer.Option("table", "--format", help="table, markdown, csv or json."),
    plot: str = typer.Option(None, "--plot", help="Write a forest plot (PNG) here."),
    alpha: float = typer.Option(0.05, "--alpha", min=0.0001, max=0.49),
    log: bool = typer.Option(False, "--log", help="Record the comparison as a run."),
    wide: bool = typer.Option(
        False,
        "--wide",
        help="Every column: spread, failures, leakage, overfitting, monitor "
        "events, forgetting, config hash (markdown, csv and json always have them).",
    ),
) -> None:
    """Rank configurations by their seeds, with intervals, ties and what differs."""
    from xp.compare import check_plot_path, fetch_runs, forest_plot, rank_groups, render, table_rows

    if fmt not in ("table", "markdown", "csv", "json"):
        _fail(f"--format {fmt}: use table, markdown, csv or json")
    try:
        if plot:
            check_plot_path(plot)
        from xp.record.store import configure_store

        workspace = _workspace()
        configure_store(workspace)
        metric = metric_key(metric)  # (`test@ood/f1` as the run schema spells it: `test:ood/f1`)
        runs = fetch_runs(project, experiment, filter_string, metric, warn=warn)
        result = rank_groups(runs, metric, alpha)
        if plot:
            forest_plot(result, plot)
        if log:
            from xp.record.track import log_comparison

            tables = render(result, "markdown"), render(result, "json")
            run_id = log_comparison(
                project or experiment or "compare", workspace, result, *tables, plot
            )
    except XpError as e:
        _fail(str(e))
    except Exception as e:  # a malformed --filter is MLflow's to explain
        if type(e).__name__ == "MlflowException":
            _fail(f"--filter: {str(e).splitlines()[0]}")
        raise
    if fmt != "table":
        print(render(result, fmt), end="")
    else:
        print_ranking(result, table_rows(result, wide))
    if log:
        err.print(f"comparison recorded as run {run_id}", highlight=False)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def promote(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., help="A repeat run id (the evidence)."),
    name: str = typer.Option(..., "--name", help="The registered model's name."),
    alias: str = typer.Option("champion", "--alias", help="The alias to move to the new version."),
    metric: str = typer.Option(None, "--metric", help="Default: the repeat's metric."),
    min_seeds: int = typer.Option(5, "--min-seeds", min=1, help="Successful seeds needed."),
    alpha: float = typer.Option(0.05, "--alpha", min=0.0001, max=0.49, help="Significance level."),
    max_failed: int = typer.Option(0, "--max-failed", min=0, help="Failed seeds tolerated."),
    max_leakage: float = typer.Option(
        0.0,
        "--max-leakage",
        min=0.0,
        max=1.0,
        help="Share of test inputs also in train tolerated (the data audit; 1: any, or unknown).",
    ),  # fmt: skip
    dry_run: bool = typer.Option(False, "--dry-run", help="Check the gates; change nothing."),
    ensemble: bool = typer.Option(
        False,
        "--ensemble",
        help="Register every seed's model averaged into one (`xp ensemble`), only if it also "
        "beats the representative seed (gate beats_representative).",
    ),
) -> None:
    """Register a repeat's representative model, only if every gate passes."""
    from xp.registry import Policy, PromotionRefused
    from xp.registry import promote as run_promote

    try:
        _, options = split_extra_args(list(ctx.args))  # `mlflow run -P dry_run=true`
        dry_run = dry_run or options.pop("dry_run", "false").lower() in ("1", "true", "yes")
        if options:
            raise XpError(f"unknown option(s) for promote: {', '.join(options)}")
        from xp.record.store import configure_store

        configure_store(_workspace())
        policy = Policy(alias, metric and metric_key(metric), min_seeds, alpha, max_failed,
                        max_leakage)  # fmt: skip
        if ensemble:
            from xp.ensemble import promote as run_promote
        ev = run_promote(run_id, name, policy, dry_run=dry_run)
    except PromotionRefused as e:
        print_gates(e.gates)
        tag_project_run({"xp.kind": "promote", "xp.group": run_id})
        _fail(str(e), EXIT_FAILED_RUN)
    except XpError as e:
        _fail(str(e))
    print_gates(ev["gates"])
    out.print(
        f"{ev['metric']} {ev['mean']:.4f}, 95% CI [{ev['ci95_low']:.4f}, {ev['ci95_high']:.4f}] "
        f"over {ev['n']} seeds; representative seed {ev['seed']} (run {ev['run_id']})",
        highlight=False,
    )
    if ensemble:
        _print_ensemble(ev["ensemble"], recorded=False)
    tag_project_run(
        {
            "xp.kind": "promote",
            "xp.group": run_id,
            "xp.gates": ev["tags"]["xp.gates"],
            "xp.promoted": f"{name}/{ev['version']}" if ev["version"] else "dry-run",
        }
    )
    if ev["version"] is None:
        verdict = "would pass" if ev["passed"] else "would be refused"
        out.print(f"dry run: the promotion {verdict}; the registry is unchanged", highlight=False)
        if not ev["passed"]:
            raise typer.Exit(EXIT_FAILED_RUN)
        return
    out.print(
        f"[green]registered[/] {name} version {ev['version']} as @{alias}"
        + (f" (version {ev['current']} is now @previous)" if ev["current"] else ""),
        highlight=False,
    )
    out.print(f'load it: mlflow.pyfunc.load_model("models:/{name}@{alias}")', highlight=False)


@app.command()
def reproduce(
    run_id: str = typer.Argument(..., help="A training or repeat run id."),
    tolerance: float = typer.Option(
        0.0,
        "--tolerance",
        min=0.0,
        help="Largest |difference| of a metric still 'within tolerance'.",
    ),
    jobs: int = typer.Option(1, "--jobs", min=1, help="Seeds re-run at once (a repeat)."),
    executor: str = typer.Option(
        "warm", "--executor", help="warm (workers that train seed after seed) or process."
    ),
    margin: str = typer.Option(
        None,
        "--margin",
        help="A repeat: equivalence margin of the mean, in metric units ('default': what the "
        "seeds can resolve, 2.47 original sd at 5 vs 5 seeds, 1.48 at 10 vs 10).",
    ),
    seeds: str = typer.Option(
        None, "--seeds", help="A repeat: fresh seeds (6,7,8) to re-run ('recorded': the same)."
    ),
) -> None:
    """Re-run a recorded run from its record (commit, diff, data md5s, command) and compare."""
    from xp.judge import PASSING
    from xp.reproduce import reproduce as run_reproduce

    if margin == "default":  # the MLproject entry point's spelling of "not given"
        margin = None
    if seeds == "recorded":
        seeds = None
    try:
        margin_value = None if margin is None else float(margin)
    except ValueError:
        _fail(f"--margin {margin}: give a positive number, in metric units")
    try:
        _check_executor(executor, jobs)
    except XpError as e:
        _fail(str(e))
    try:
        progress = SeedProgress()
        try:
            with terminate_as_interrupt():
                result = run_reproduce(
                    run_id, _workspace(), tolerance=tolerance, jobs=jobs, on_event=progress,
                    margin=margin_value, seeds=seeds, executor=executor,
                    on_start=lambda new: out.print(f"reproducing {run_id} as run {new}",
                                                   highlight=False),
                )  # fmt: skip
        finally:
            progress.close()
    except KeyboardInterrupt as e:
        _stopped(e, "the reproduction is incomplete")
    except XpError as e:
        _fail(str(e))
    print_reproduction(run_id, result)
    tag_project_run({"xp.kind": "reproduce", "xp.reproduces": run_id,
                      "xp.reproduce.verdict": result["verdict"],
                      "xp.reproduction": result["reproduction"]})  # fmt: skip
    unexplained = (result.get("cause") or "").startswith("unexplained")
    if result["verdict"] not in PASSING or unexplained:
        raise typer.Exit(EXIT_FAILED_RUN)


def _check_executor(executor: str, jobs: int, cluster: bool = False) -> None:
    from xp.execute.executor import check_kind

    warning = check_kind(executor, jobs, cluster)
    if warning:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)


def _stopped(e: BaseException, what: str) -> None:
    """One line and exit 143 for SIGTERM (raised as `Terminated`), 130 for Ctrl-C."""
    from xp.record.supervise import Terminated

    if isinstance(e, Terminated):
        _fail(f"terminated (SIGTERM): {what}", EXIT_KILLED["SIGTERM"])
    _fail(f"interrupted: {what}", EXIT_KILLED["SIGINT"])


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: every mistake on the command line is one `error:` line.

    Click's own errors (an option out of range, a missing option, an unknown option) would print
    a usage box; they get the same one line and exit code 2 as every other user error.
    """
    try:  # typer >= 0.20 carries its own copy of click
        from typer._click import exceptions as click_errors
    except ImportError:  # pragma: no cover (older typer on the real click)
        from click import exceptions as click_errors

    from xp.train.console import guard_output_streams, quiet_libraries

    guard_output_streams()
    quiet_libraries()
    try:
        code = app(args=argv, prog_name="xp", standalone_mode=False)
    except click_errors.NoArgsIsHelpError as e:
        e.show()
        return EXIT_USER_ERROR
    except click_errors.ClickException as e:
        err.print(f"[bold red]error:[/] {e.format_message()}", highlight=False, soft_wrap=True)
        return e.exit_code
    except (typer.Abort, KeyboardInterrupt):  # Ctrl-C outside a verb's own handling
        return 130
    return code if isinstance(code, int) else 0


def entry() -> None:
    """The `xp` command: `main`, then an exit without the interpreter's slow teardown."""
    try:
        code: object = main()
    except SystemExit as e:
        code = e.code
    leave(code)
