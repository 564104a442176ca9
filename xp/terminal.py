"""What the `xp` command line draws: progress bars, tables, result lines (rich).

Only `xp.cli` uses this module; the library returns data and prints nothing. It imports rich
alone, so `xp --help` stays cheap.
"""

from __future__ import annotations

import errno
import os
import sys

from rich.console import Console

out = Console(soft_wrap=True)  # never break a run id or a path across lines
err = Console(stderr=True, soft_wrap=True)


class _ClosedPipeSafe:
    """A stream that turns into /dev/null once its reader has gone (`xp train ... | head -1`,
    or a repeat parent that died): what a run prints is never worth stopping its training."""

    def __init__(self, stream):
        self._stream = stream
        self._closed = False

    def _drop(self) -> None:
        self._closed = True
        try:  # the fd is broken; point it at /dev/null so the interpreter's exit flush is quiet
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass

    def _try(self, call, *args):
        try:
            return call(*args)
        except (BrokenPipeError, ValueError):
            self._drop()
        except OSError as e:
            if e.errno != errno.EPIPE:
                raise
            self._drop()
        return None

    def write(self, text: str) -> int:
        if not self._closed:
            self._try(self._stream.write, text)
        return len(text)

    def flush(self) -> None:
        if not self._closed:
            self._try(self._stream.flush)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def guard_output_streams() -> None:
    """Make stdout and stderr survive a reader that went away (a closed pipe)."""
    if not isinstance(sys.stdout, _ClosedPipeSafe):
        sys.stdout = _ClosedPipeSafe(sys.stdout)
    if not isinstance(sys.stderr, _ClosedPipeSafe):
        sys.stderr = _ClosedPipeSafe(sys.stderr)


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
        if seed not in self._tasks:
            self._tasks[seed] = self._bar.add_task(f"seed {seed}", total=None)
        task = self._tasks[seed]
        if kind == "line" and info["line"].startswith("warning: "):  # once, not once per seed
            if info["line"] not in self._warned:
                self._warned.add(info["line"])
                err.print(info["line"], highlight=False, soft_wrap=True)
        elif kind == "progress":
            self._bar.update(task, completed=info["step"], total=info["total"])
        elif kind == "done":
            word = "done" if info["code"] == 0 else f"exit {info['code']}"
            self._bar.update(task, description=f"seed {seed} {word}")
            if not out.is_terminal:
                out.print(f"seed {seed}: {word}", highlight=False)

    def close(self) -> None:
        self._bar.stop()


def print_summary(summary: dict) -> None:
    """A repeat's statistics table, failed seeds, verdict and where the report is."""
    from xp.report import terminal_rows

    title = f"{summary['metric']} over seeds (successful seeds)"
    print_table(title, ["metric", "n", "mean", "std", "95% CI"], terminal_rows(summary))
    if summary["failed_seeds"]:
        out.print(f"failed seeds: {', '.join(map(str, summary['failed_seeds']))}", highlight=False)
    if summary.get("verdict"):
        cmp = summary["comparison"]
        out.print(
            f"verdict: [bold]{summary['verdict']}[/] (improvement {cmp['diff']:.4f}, 95% CI "
            f"[{cmp['diff_ci95_low']:.4f}, {cmp['diff_ci95_high']:.4f}], one-sided Welch p="
            f"{cmp['welch']['p_value']:.3g}; seeds per arm to settle it: "
            f"{cmp.get('seeds_needed')})",
            highlight=False,
        )
    logged = f"runs:/{summary['parent_run_id']}/report"
    out.print(f"report: {summary['report_dir']} (logged to {logged})", highlight=False)


class TrainProgress:
    """Draws training progress: a bar on a terminal, evaluation lines everywhere."""

    def __init__(self) -> None:
        self._bar = None
        self._task = None

    def __call__(self, kind: str, info: dict) -> None:
        if kind == "start":
            from xp.store import redact

            uri = os.environ["MLFLOW_TRACKING_URI"]
            where = redact(uri) if info["tracking"] else "tracking off"
            out.print(f"run [bold]{info['run_id']}[/] ({where})", highlight=False)
        elif kind == "fit":
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

            self._bar = Progress(
                "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                TimeRemainingColumn(), console=out, transient=True, disable=not out.is_terminal,
            )  # fmt: skip
            self._task = self._bar.add_task("training", total=info["total"], completed=info["step"])
            self._bar.start()
        elif kind == "step" and os.environ.get("XP_PROGRESS") == "lines":  # for a repeat parent
            if info["step"] % max(1, info["total"] // 100) == 0 or info["step"] == info["total"]:
                print(f"progress {info['step']}/{info['total']}", flush=True)
        elif kind == "step" and self._bar is not None:
            self._bar.update(self._task, completed=info["step"],
                             description=f"loss {info['loss']:.4f}")  # fmt: skip
        elif kind == "warning":
            err.print(f"warning: {info['message']}", highlight=False, soft_wrap=True)
        elif kind == "eval":
            shown = "  ".join(f"{k} {v:.4f}" for k, v in info["metrics"].items())
            out.print(f"step {info['step']:>5}  val  {shown}", highlight=False, soft_wrap=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def print_result(result) -> None:
    """How a training job ended: test metrics and outcome, or why it stopped."""
    if result.status == "KILLED":
        err.print(f"[yellow]killed:[/] {result.message}", highlight=False)
        return
    line = "  ".join(f"{k} {v:.4f}" for k, v in result.test.items())
    out.print(f"test  {line}", highlight=False, soft_wrap=True)
    if result.outcome == "failed":
        err.print(f"[bold red]failed:[/] run {result.run_id}: {result.message}", highlight=False)
    else:
        out.print(f"[green]{result.outcome}[/] run {result.run_id}", highlight=False)


def print_gates(gates: list) -> None:
    """The promotion gates: passed or not, the value measured, what it needed."""
    rows = [[g.name, "[green]yes[/]" if g.passed else "[bold red]no[/]", str(g.value),
             g.threshold] for g in gates]  # fmt: skip
    print_table("promotion gates", ["gate", "passed", "value", "needs"], rows)


def print_ranking(result: dict, rows: list[list[str]]) -> None:
    """`xp compare`'s table (header row first) and its warnings."""
    print_table(f"{result['metric']} by configuration ({result['n_runs']} runs)", rows[0], rows[1:])
    for w in result["warnings"]:
        err.print(f"[yellow]warning:[/] {w}", highlight=False)


def print_reproduction(run_id: str, result: dict) -> None:
    """Original, reproduced and difference of every metric; what else changed; the verdict."""
    from xp.reproduce import format_value

    rows = [[r["metric"], *(format_value(r[k]) for k in ("original", "reproduced", "diff"))]
            for r in result["rows"]]  # fmt: skip
    print_table(f"run {run_id} reproduced as {result['reproduction']}",
                ["metric", "original", "reproduced", "difference"], rows)  # fmt: skip
    for m in result["mismatches"]:
        err.print(f"[yellow]record differs:[/] {m}", highlight=False)
    for m in result["environment"]:
        err.print(f"[yellow]environment differs:[/] {m}", highlight=False)
    from xp.reproduce import verdict_line

    out.print(f"verdict: [bold]{verdict_line(result)}[/] (tolerance {result['tolerance']:g})",
              highlight=False, soft_wrap=True)  # fmt: skip
    if (result.get("cause") or "").startswith("unexplained"):
        err.print("[bold red]error:[/] a determinism bug: the same code, data, seeds and "
                  "environment gave other numbers; please report it with both run ids",
                  highlight=False)  # fmt: skip
