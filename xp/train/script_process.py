"""The process a script's seed runs in: forked from xp's own, warm, or a new interpreter.

A Python command (`python path/to/train.py ...` or `python -m package.module ...`) runs in a
process forked from xp's as the seed starts, before xp opens the store, a GPU or a thread: while
xp records the run, the fork imports what the script will (torch, transformers, MLflow, xp's
integrations; in a warm worker most are already there) and starts its metric writer, then waits
for the command line; it runs the script with `runpy` as `python` would (`__main__`, `sys.argv`,
`sys.path[0]`), exits with its exit code, and `SystemExit`, an uncaught exception (traceback on
stderr, exit 1) and Ctrl-C (130) end it as they would end `python`. 8 seeds of a Trainer script
pay one interpreter start, not 8. Any other command, `XP_SCRIPT_FORK=0`, or a seed in a Ray actor
(whose own threads a fork must not copy) runs as a new process.

Either way the script runs in a session of its own (Ctrl-C and SIGTERM reach it through xp, which
passes them on; a second one kills it), with SIGTERM when the xp process dies (Linux), its stdout
on xp's and its stderr through xp's, the last lines kept for `xp.failure`.
"""

from __future__ import annotations

import ast
import collections
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xp import XpError
from xp.config import ScriptConfig, render
from xp.config.script import script_path

TAIL_LINES = 12  # the stderr lines a crashed seed's `xp.failure` keeps
FORK_ENV = "XP_SCRIPT_FORK"
# what a fork imports ahead of the script, where the script imports it (the rest it imports itself)
PRELOAD = ("torch", "transformers", "lightning", "pytorch_lightning", "mlflow", "sklearn",
           "numpy", "pandas", "accelerate", "peft", "trl", "datasets", "xp.integrations",
           "xp.integrations.hf", "xp.integrations.lightning")  # fmt: skip
Outcome = tuple[int, list[str], str | None]  # exit code, last stderr lines, the forwarded signal


def die_with_parent() -> None:
    """SIGTERM to this process when the one that started it dies (Linux): a kill -9 of a seed
    leaves no script training on."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ScriptProcess:
    """A script's seed: `prepare` early (a fork starts importing), `run` once the run exists."""

    @staticmethod
    def prepare(config: ScriptConfig, root: Path) -> ScriptProcess:
        argv = render(config, {}, sys.executable)
        target = _python_target(argv, root)
        # (a Ray actor runs threads of Ray's own, which a fork must not copy mid-lock: a new
        # process there)
        forkable = hasattr(os, "fork") and "ray" not in sys.modules
        if target is not None and os.environ.get(FORK_ENV, "1") != "0" and forkable:
            return _Forked(_imports_of(target, root))
        return ScriptProcess()

    def run(self, argv: list[str], env: dict[str, str], cwd: Path) -> Outcome:
        """Run the command to its end; Ctrl-C and SIGTERM are passed on."""

        def start() -> tuple[Callable[[int], None], Callable[[], int], int]:
            try:
                proc = subprocess.Popen(
                    argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
                    start_new_session=True, preexec_fn=die_with_parent,  # noqa: PLW1509
                )  # fmt: skip
            except OSError as e:
                raise XpError(f"cannot start {shlex.join(argv[:2])}: {e.strerror}") from None
            return proc.send_signal, proc.wait, proc.stderr.fileno()

        return _supervise(start)

    def cancel(self) -> None:
        """The run never started (a user error before it): let go of what `prepare` began."""


class _Forked(ScriptProcess):
    """A fork of this process that imports ahead, then runs the script it is given."""

    def __init__(self, imports: list[str]):
        job_r, job_w = os.pipe()
        err_r, err_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover (the fork: measured by the tests through its effects)
            os.close(job_w)
            os.close(err_r)
            _serve(job_r, err_w, imports)
        os.close(job_r)
        os.close(err_w)
        self._pid, self._job, self._err = pid, job_w, err_r

    def run(self, argv: list[str], env: dict[str, str], cwd: Path) -> Outcome:
        def start() -> tuple[Callable[[int], None], Callable[[], int], int]:
            job = json.dumps({"argv": argv, "env": env, "cwd": str(cwd)}).encode()
            with os.fdopen(self._job, "wb") as pipe:
                pipe.write(job)
            self._job = -1

            def wait() -> int:
                _, status = os.waitpid(self._pid, 0)
                return os.waitstatus_to_exitcode(status)

            return (lambda sig: os.kill(self._pid, sig)), wait, self._err

        try:
            return _supervise(start)
        finally:
            os.close(self._err)

    def cancel(self) -> None:
        if self._job >= 0:  # no job: the fork reads end of input and exits
            os.close(self._job)
            self._job = -1
            os.waitpid(self._pid, 0)
            os.close(self._err)


def _serve(job_r: int, err_w: int, imports: list[str]) -> None:  # pragma: no cover (the fork)
    """The fork: import ahead, wait for the job, run it, exit with its code."""
    from xp.record import metric_writer, supervise

    code = 1
    try:
        os.setsid()  # Ctrl-C reaches the script through xp only
        die_with_parent()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _forget_connections()
        low, high = sorted((job_r, err_w))  # what xp had open (a worker's socket, a writer's
        os.closerange(3, low)  # pipes) is not the script's to hold
        os.closerange(low + 1, high)
        os.closerange(high + 1, 65536)
        metric_writer.forget_inherited()
        if "torch" in imports or "torch" in sys.modules:  # what deterministic kernels import
            imports = [*imports, "torch._inductor"]
        for name in imports:
            try:
                __import__(name)
            except Exception:  # the script will meet it and say so
                pass
        if "xp.integrations" in sys.modules:  # forked now, with one thread: no interpreter start
            metric_writer.use_writer("fork")
            metric_writer.start_writer(training=True)
        metric_writer.warm_store(os.environ.get("MLFLOW_TRACKING_URI"))  # (after the writer's fork)
        with os.fdopen(job_r, "rb") as pipe:
            raw = pipe.read()
        if not raw:  # cancelled: the run never started
            os._exit(0)
        job = json.loads(raw)
        os.chdir(job["cwd"])
        os.environ.clear()
        os.environ.update(job["env"])
        os.dup2(err_w, 2)
        os.close(err_w)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        code = _run_python(job["argv"][1:])
    except BaseException:
        import traceback

        traceback.print_exc()
    supervise.leave(code)


def _forget_connections() -> None:  # pragma: no cover (the fork)
    """The database connections xp's process had open (a store it read: a resumed run, a worker's
    last seed) are its own: this process lets go of its copies, without closing them for the
    parent, before anything uses them (SQLAlchemy's `dispose(close=False)` after a fork)."""
    if "sqlalchemy" not in sys.modules:
        return
    import gc

    from sqlalchemy.engine import Engine

    for obj in gc.get_objects():
        if isinstance(obj, Engine):
            obj.dispose(close=False)
    gc.collect()  # (while their descriptors are still theirs)


def _run_python(args: list[str]) -> int:  # pragma: no cover (the fork)
    """`python <args>` in this process: a script's path or `-m module`, then its arguments."""
    import runpy
    import traceback

    try:
        if args[0] == "-m":
            sys.argv = [args[1], *args[2:]]
            sys.path.insert(0, os.getcwd())
            runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(args)
            sys.path.insert(0, str(Path(args[0]).resolve().parent))
            runpy.run_path(args[0], run_name="__main__")
        return 0
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        traceback.print_exc()
        return 130
    except BaseException:
        traceback.print_exc()
        return 1


Started = tuple[Callable[[int], None], Callable[[], int], int]  # send a signal, wait, stderr


def _supervise(start: Callable[[], Started]) -> Outcome:
    """Start the script and wait for it, passing Ctrl-C/SIGTERM on (a second one kills it) and
    its stderr through, keeping its last lines. The handlers are in place before it starts: a
    signal that comes first is passed on as soon as it runs."""
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    stopped: list[str] = []
    sender: list[Callable[[int], None]] = []

    def forward(signum: int, _frame: Any) -> None:
        try:
            if stopped and sender:
                sender[0](signal.SIGKILL)
                return
            stopped.append(signal.Signals(signum).name)
            if sender:
                sender[0](signum)
        except ProcessLookupError:
            pass

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        send, wait, err_fd = start()
        sender.append(send)
        if stopped:  # asked to stop while it started
            send(signal.Signals[stopped[0]])

        def pump() -> None:
            with os.fdopen(os.dup(err_fd), "rb") as stream:
                for raw in iter(stream.readline, b""):
                    os.write(2, raw)
                    tail.append(raw.decode(errors="replace").rstrip())

        reader = threading.Thread(target=pump, name="xp-script-stderr", daemon=True)
        reader.start()
        try:
            code = wait()
        finally:
            reader.join(timeout=5)
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    return code, list(tail), stopped[0] if stopped else None


def _python_target(argv: list[str], root: Path) -> str | None:
    """The script (a path) or `-m module` a command runs with this interpreter, else None."""
    if len(argv) < 2 or argv[0] != sys.executable:
        return None
    if argv[1] == "-m" and len(argv) >= 3:
        return f"-m {argv[2]}"
    script = script_path(argv)
    return script if script and (root / script).is_file() else None


def _imports_of(target: str, root: Path) -> list[str]:
    """The modules of `PRELOAD` the script imports at its top level (a `-m` module: mlflow and
    xp's integrations only), mlflow first."""
    wanted = {"mlflow", "xp.integrations"}
    if not target.startswith("-m "):
        try:
            tree = ast.parse((root / target).read_text())
        except (OSError, SyntaxError, ValueError):
            tree = ast.Module(body=[], type_ignores=[])
        for node in tree.body:
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            for name in names:
                wanted.update(p for p in PRELOAD if name == p or name.startswith(p + "."))
    return [p for p in PRELOAD if p in wanted]
