"""Shared fixtures: a throw-away copy of this repository (git + DVC, data built by `dvc repro`),
a private tracking store per test, and a tiny BERT.

End-to-end tests drive the real `mlflow run`, `dvc repro` and `xp` commands inside the copy, so
they see exactly what a user's clone sees.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

# before anything imports huggingface_hub, which reads it once: no hub calls from the tests
os.environ["HF_HUB_OFFLINE"] = "1"

MAIN = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv running the tests: xp, mlflow, dvc live here

# seconds-long digits runs: 3 epochs of 10 steps, evaluated every 5 steps
FAST_DIGITS = ["train.epochs=3", "eval.every=5", "eval.patience=null"]


def merged(*overrides: str) -> list[str]:
    """`key=value` overrides with later keys replacing earlier ones (xp refuses a key twice)."""
    out: dict[str, str] = {}
    for item in overrides:
        out[item.partition("=")[0]] = item
    return list(out.values())


def run(cmd: list[str], cwd: Path, env: dict | None = None, check: bool = True, **kw):
    """Run a command with the venv first on PATH; returns CompletedProcess (text)."""
    full_env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **(env or {})}
    proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def default_signals() -> None:
    """`preexec_fn` for a child a test will signal: SIGINT and SIGTERM at their defaults, whatever
    the suite inherited (started from a background job, `nohup` or a CI runner, it ignores SIGINT,
    and a child would inherit that), so the suite passes however it is started."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def git(repo: Path, *args: str) -> str:
    return run(["git", *args], repo).stdout.strip()


def _source_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=MAIN, capture_output=True,
        text=True, check=True,
    ).stdout.split("\n")  # fmt: skip
    return [f for f in out if f and (MAIN / f).is_file()]


@pytest.fixture(scope="session")
def built_repo(tmp_path_factory) -> Path:
    """A git repo holding this project's files, with digits and vader data built by `dvc repro`."""
    repo = tmp_path_factory.mktemp("userrepo") / "repo"
    for rel in _source_files():
        dst = repo / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(MAIN / rel, dst)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "test@example.com")
    git(repo, "config", "user.name", "xp tests")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "initial")
    run(["dvc", "repro", "-q"], repo)
    status = git(repo, "status", "--porcelain")
    assert status == "", f"dvc repro changed tracked files (dvc.lock not reproducible?):\n{status}"
    return repo


def copy_repo(built_repo: Path, base: Path) -> Path:
    """A copy of the built repo at `base/repo`, without its run scratch folders."""
    dst = base / "repo"
    shutil.copytree(built_repo, dst, symlinks=True, ignore=shutil.ignore_patterns(".xp"))
    return dst


@pytest.fixture
def repo(built_repo: Path, tmp_path: Path) -> Path:
    """A private copy of the built repo (tests may dirty it) with its own tracking store."""
    return copy_repo(built_repo, tmp_path)


@pytest.fixture(autouse=True)
def _private_store(monkeypatch, tmp_path):
    """Each test gets its own store; nothing leaks into the developer's mlflow.db."""
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    from xp.train.models import save_tiny_bert

    return save_tiny_bert(tmp_path_factory.mktemp("tinybert") / "model")


@pytest.fixture(autouse=True)
def _no_leaked_active_run():
    """A failing test must not leave an MLflow run active for the next one."""
    yield
    import mlflow

    while mlflow.active_run() is not None:
        mlflow.end_run("FAILED")


def parent_id_in(stdout: str) -> str:
    """The repeat run id `xp repeat` printed."""
    return next(x.split()[2] for x in stdout.splitlines() if x.startswith("repeat run "))


# two digits configurations a user would compare: 30 steps at the default LR, 80 steps at 3x it
WEAK = ["train.epochs=3", "eval.every=5", "eval.patience=null"]
STRONG = ["train.epochs=8", "eval.every=5", "eval.patience=null", "optim.lr=0.003"]


@pytest.fixture(scope="session")
def digits_groups(built_repo, tmp_path_factory):
    """Two 3-seed `xp repeat` groups in one store (the strong one with the weak as baseline),
    shared by the repeat, compare, promote and reproduce tests: seeds are the slow part."""
    base = tmp_path_factory.mktemp("groups")
    repo = copy_repo(built_repo, base)
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{base / 'mlflow.db'}"}
    ids, stdout = {}, {}
    for name, args in (("weak", WEAK), ("strong", STRONG)):
        extra = ["--baseline", ids["weak"]] if name == "strong" else []
        proc = run(["xp", "repeat", "digits", *args, "--seeds", "3", "--jobs", "2", *extra],
                   repo, env=env)  # fmt: skip
        ids[name] = parent_id_in(proc.stdout)
        stdout[name] = proc.stdout
    return {"repo": repo, "env": env, "ids": ids, "stdout": stdout}
