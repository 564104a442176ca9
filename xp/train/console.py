"""What a training process prints: the run line, evaluation lines, a progress bar on a terminal,
the result, and an error as one line (rich).

`xp train` prints it, and so does each seed of a repeat into its log, which the repeat's parent
reads (`progress N/M` lines, `warning:` lines): this is the train wing's side of that contract.
"""

from __future__ import annotations

import errno
import os
import sys

from rich.console import Console

EXIT_USER_ERROR = 2  # one `error:` line: a mistake the user can fix
EXIT_FAILED_RUN = 1
EXIT_KILLED = {"SIGINT": 130, "SIGTERM": 143}

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


def quiet_libraries() -> None:
    """Keep library chatter (store creation, model cards, progress bars) off the user's screen."""
    import logging

    for name in ("mlflow", "alembic", "transformers", "dvc", "git"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.ERROR)  # "Creating tables..."
    logging.getLogger("mlflow.transformers").setLevel(logging.ERROR)  # "no model card on the hub"
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)  # "pickle needs caution"
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one line per error


def print_error(message: str) -> None:
    """A user's mistake, as the one line every xp command prints for it."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)


class TrainProgress:
    """Draws training progress: a bar on a terminal, evaluation lines everywhere."""

    def __init__(self) -> None:
        self._bar = None
        self._task = None

    def __call__(self, kind: str, info: dict) -> None:
        if kind == "start":
            from xp.record.store import redact

            # (only a tracked run has a store: `--no-track` reads no variable)
            where = (
                redact(os.environ["MLFLOW_TRACKING_URI"]) if info["tracking"] else "tracking off"
            )
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
    if line:  # (a script's untracked run: its metrics are its own to print)
        out.print(f"test  {line}", highlight=False, soft_wrap=True)
    for name, metrics in result.extra_tests.items():
        line = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        out.print(f"test:{name}  {line}", highlight=False, soft_wrap=True)
    if result.outcome == "failed" or result.status == "FAILED":
        err.print(
            f"[bold red]{result.outcome}:[/] run {result.run_id}: {result.message}", highlight=False
        )
    else:
        out.print(f"[green]{result.outcome}[/] run {result.run_id}", highlight=False)
