"""What the `xp` command line draws: progress bars, tables, result lines (rich).

Only `xp.cli` uses this module; the library returns data and prints nothing. It imports rich
alone, so `xp --help` stays cheap.
"""

from __future__ import annotations

from xp.train.console import err, out  # one console per stream, whichever wing prints


def warn(message: str) -> None:
    """One `warning: ...` line on stderr, never cut."""
    err.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


def print_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    """A rich table on stdout."""
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    out.print(table)


class SeedProgress:
    """One progress bar per seed while a repeat trains."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress

        self._bar = Progress(
            "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
            console=out, disable=not out.is_terminal,
        )  # fmt: skip
        self._tasks: dict[int, int] = {}
        self._warned: set[str] = set()
        self._bar.start()

    def parent(self, run_id: str, resumed: bool) -> None:
        word = "resuming" if resumed else "started"
        out.print(f"repeat run [bold]{run_id}[/] {word}", highlight=False)

    def __call__(self, seed: int, kind: str, info: dict) -> None:
        name = info.get("label") or f"seed {seed}"  # (a folds repeat's: `fold 2 seed 3`)
        if seed not in self._tasks:
            self._tasks[seed] = self._bar.add_task(name, total=None)
        task = self._tasks[seed]
        if kind == "line" and info["line"].startswith("warning: "):  # once, not once per seed
            if info["line"] not in self._warned:
                self._warned.add(info["line"])
                err.print(info["line"], highlight=False, soft_wrap=True)
        elif kind == "progress":
            self._bar.update(task, completed=info["step"], total=info["total"])
        elif kind == "done":
            word = "done" if info["code"] == 0 else f"exit {info['code']}"
            self._bar.update(task, description=f"{name} {word}")
            if not out.is_terminal:
                out.print(f"{name}: {word}", highlight=False)

    def close(self) -> None:
        self._bar.stop()


def print_checkup(found: dict, fmt: str) -> None:
    """`xp diagnose`: one `heading: what was found` line each, or the JSON."""
    if fmt == "json":
        import json

        print(json.dumps(found, indent=1, default=str))
        return
    out.print(f"{found['kind']} run {found['run_id']}", highlight=False)
    for head, line in found["lines"]:
        out.print(f"  {head}: {line}", highlight=False, soft_wrap=True)


def print_summary(summary: dict) -> None:
    """A repeat's statistics table, failed seeds, verdict and where the report is."""
    from xp.report import terminal_rows

    folds = summary.get("folds")
    title = f"{summary['metric']} over seeds (successful seeds)"
    if folds:
        title = (f"{summary['metric']} over {folds['count']} {folds['kind']} splits x "
                 f"{len(summary['seeds'])} seeds (successful runs; 95% CI from the seeds' spread "
                 "and the splits', corrected for their shared rows)")  # fmt: skip
    print_table(title, ["metric", "n", "mean", "std", "95% CI"], terminal_rows(summary))
    vc = (folds or {}).get("variance") or {}
    if vc.get("advice") or vc.get("error"):
        out.print(f"variance of {summary['metric']}: {vc.get('advice') or vc['error']}",
                  highlight=False, soft_wrap=True)  # fmt: skip
    if summary["failed_seeds"]:
        out.print(f"failed seeds: {', '.join(map(str, summary['failed_seeds']))}", highlight=False)
    for warning in summary.get("seed_check") or []:
        warn(warning)
    if summary.get("verdict"):
        from xp.stats import test_of

        cmp = summary["comparison"]
        test, p = test_of(cmp)
        paired = f", paired over {len(cmp['splits'])} splits" if cmp.get("splits") else ""
        settle = "" if paired else f"; seeds per arm to settle it: {cmp.get('seeds_needed')}"
        out.print(
            f"verdict: [bold]{summary['verdict']}[/] (improvement {cmp['diff']:.4f}, 95% CI "
            f"[{cmp['diff_ci95_low']:.4f}, {cmp['diff_ci95_high']:.4f}], {test} p={p:.3g}"
            f"{paired}{settle})",
            highlight=False,
        )
    if summary.get("no_verdict"):
        out.print(f"verdict: none ({summary['no_verdict']})", highlight=False)
    logged = f"runs:/{summary['parent_run_id']}/report"
    out.print(f"report: {summary['report_dir']} (logged to {logged})", highlight=False)


def print_gates(gates: list) -> None:
    """The promotion gates: passed or not, the value measured, what it needed."""
    rows = [[g.name, "[green]yes[/]" if g.passed else "[bold red]no[/]", str(g.value),
             g.threshold] for g in gates]  # fmt: skip
    print_table("promotion gates", ["gate", "passed", "value", "needs"], rows)


def print_ranking(result: dict, rows: list[list[str]]) -> None:
    """`xp compare`'s table (header row first) and its warnings. No number is ever cut: only
    the configuration's name folds onto more lines when the terminal is narrow."""
    from rich.table import Table

    table = Table(title=f"{result['metric']} by configuration ({result['n_runs']} runs)")
    needed = 1
    for i, col in enumerate(rows[0]):
        width = max(len(r[i]) for r in rows)
        if col == "configuration":
            table.add_column(col, overflow="fold")  # (only the name folds)
            needed += min(width, 24) + 3
        else:
            table.add_column(col, no_wrap=True)
            needed += width + 3
    for row in rows[1:]:
        table.add_row(*row)
    # a table wider than the terminal (--wide) is drawn whole: the terminal wraps its lines,
    # never a number cut to an ellipsis
    if needed <= out.width:
        out.print(table)
    else:
        from rich.console import Console

        Console(file=out.file, width=needed, no_color=out.no_color,
                force_terminal=out.is_terminal).print(table, crop=False)  # fmt: skip
    for w in result["warnings"]:
        err.print(f"[yellow]warning:[/] {w}", highlight=False)


def print_reproduction(run_id: str, result: dict) -> None:
    """Original, reproduced and difference of every metric; what else changed; the verdict."""
    from xp.judge import format_value

    rows = [[r["metric"], *(format_value(r[k]) for k in ("original", "reproduced", "diff"))]
            for r in result["rows"]]  # fmt: skip
    print_table(f"run {run_id} reproduced as {result['reproduction']}",
                ["metric", "original", "reproduced", "difference"], rows)  # fmt: skip
    for m in result["mismatches"]:
        err.print(f"[yellow]record differs:[/] {m}", highlight=False)
    for m in result["environment"]:
        err.print(f"[yellow]environment differs:[/] {m}", highlight=False)
    from xp.judge import verdict_line

    out.print(f"verdict: [bold]{verdict_line(result)}[/] (tolerance {result['tolerance']:g})",
              highlight=False, soft_wrap=True)  # fmt: skip
    if (result.get("cause") or "").startswith("unexplained"):
        err.print("[bold red]error:[/] a determinism bug: the same code, data, seeds and "
                  "environment gave other numbers; please report it with both run ids",
                  highlight=False)  # fmt: skip
