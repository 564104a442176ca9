import subprocess
import sys

import pytest

from xp import XpError
from xp.cli import split_extra_args

CHECK = (
    "import sys, runpy; sys.argv = ['xp', '--help'];\n"
    "try:\n    runpy.run_module('xp.cli', run_name='__main__')\nexcept SystemExit: pass\n"
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
