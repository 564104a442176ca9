import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import BIN, FAST_DIGITS
from xp import XpError
from xp.cli.app import split_extra_args

CHECK = (
    "import sys; from xp.cli import main\n"
    "try:\n    main(['--help'])\nexcept SystemExit: pass\n"
    "heavy = [m for m in ('torch', 'mlflow', 'transformers', 'dvc', 'sklearn')\n"
    "         if m in sys.modules]\n"
    "print('HEAVY', heavy)"
)


def test_xp_help_imports_neither_torch_nor_mlflow():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True).stdout
    assert "train" in out  # the help text listed the verb
    assert "HEAVY []" in out


def test_mlflow_run_extras_become_overrides():
    overrides, options = split_extra_args(
        ["seed=2", "--optim.lr", "3e-4", "--train.epochs=2", "--resume", "abc"]
    )
    assert overrides == ["seed=2"]
    assert options == {"optim.lr": "3e-4", "train.epochs": "2", "resume": "abc"}
    with pytest.raises(XpError, match="needs a value"):
        split_extra_args(["--optim.lr"])


def test_more_jobs_than_cores_warns_and_an_unknown_executor_is_refused(capsys):
    import os

    from xp.cli.app import _check_executor

    _check_executor("warm", os.cpu_count() or 1)
    assert "warning" not in capsys.readouterr().err
    _check_executor("process", (os.cpu_count() or 1) + 1)  # allowed: it warns and runs
    assert "more than this machine's" in capsys.readouterr().err
    with pytest.raises(XpError, match="--executor threads: use one of warm, process"):
        _check_executor("threads", 1)


def test_leaving_without_teardown_still_joins_threads_runs_atexit_and_keeps_the_code(tmp_path):
    """`xp` exits by `supervise.leave`: what a normal exit does that matters still happens."""
    code = (
        "import atexit, sys, threading, time; from pathlib import Path\n"
        "from xp.record.supervise import leave\n"
        "out, arg = Path(sys.argv[1]), sys.argv[2]\n"
        "atexit.register(lambda: print('atexit ran', flush=True))\n"
        "late = lambda: (time.sleep(0.3), out.write_text('thread done'))\n"
        "threading.Thread(target=late).start()\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "pool = ThreadPoolExecutor(1); pool.submit(print, end='')  # never shut down: no hang\n"
        "print('buffered', end='')\n"
        "leave(None if arg == 'none' else int(arg) if arg.isdigit() else arg)"
    )
    for arg, rc in (("none", 0), ("3", 3), ("refused: a message", 1)):
        out = tmp_path / f"thread-{rc}.txt"
        proc = subprocess.run([sys.executable, "-c", code, str(out), arg], capture_output=True,
                              text=True)  # fmt: skip
        assert proc.returncode == rc
        assert proc.stdout == "bufferedatexit ran\n" and out.read_text() == "thread done"
        assert proc.stderr == ("refused: a message\n" if rc == 1 else "")


def test_untracked_train_reads_no_store_variable(repo):
    """README's `xp train <project> --no-track` in a fresh shell, where no MLFLOW_TRACKING_URI is
    set (the suite's fixtures set one, and once hid a traceback here)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    proc = subprocess.run(["xp", "train", "digits", *FAST_DIGITS, "--no-track"], cwd=repo,
                          env=env, capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "(tracking off)" in proc.stdout.splitlines()[0] and "Traceback" not in proc.stderr
    assert not (repo / "mlflow.db").exists()  # the null tracker opened no store


def test_a_verb_takes_ctrl_c_even_when_it_inherited_sigint_ignored():
    """A command started from a background job inherits SIGINT ignored; `xp repeat`, `search`,
    `reproduce` and `server` take Ctrl-C in their block all the same, and give back what they
    inherited afterwards."""
    from xp.record.supervise import terminate_as_interrupt

    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with pytest.raises(KeyboardInterrupt), terminate_as_interrupt():
            os.kill(os.getpid(), signal.SIGINT)  # (its handler runs before the next line)
            time.sleep(1)  # (not reached: a process that ignored it would get here and pass)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)
