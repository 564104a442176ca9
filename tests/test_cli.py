import subprocess
import sys

import pytest

from xp import XpError
from xp.cli import split_extra_args

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

    from xp.cli import _check_executor

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
        "from xp.supervise import leave\n"
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
