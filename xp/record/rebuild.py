"""Rebuild a recorded run's code and data without touching the user's tree.

The code: a git worktree at the recorded commit with the recorded diff applied. The data: every
recorded DVC md5 checked out from the DVC cache, or pulled by hash from the default DVC remote.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from xp import XpError


class RebuildError(XpError):
    """A run that cannot be rebuilt: its commit, diff or data can no longer be found."""


def _git(root: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, input=stdin, capture_output=True, text=True)


def check_commit(root: Path, commit: str | None, run_id: str, remote: str | None) -> None:
    """Raise when the recorded commit is not in this repository."""
    if not commit or commit == "none":
        raise RebuildError(f"run {run_id} recorded no git commit: its code cannot be rebuilt")
    if _git(root, "cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
        fetch = f"`git fetch {remote}`" if remote else "`git fetch` from where it was pushed"
        raise RebuildError(
            f"commit {commit} of run {run_id} no longer exists in {root} (rewritten by a rebase "
            f"or reset and garbage-collected?); {fetch} or restore the branch that had it"
        )


def build_worktree(root: Path, commit: str, diff: str | None, dest: Path) -> Path:
    """A detached git worktree at `commit` with the recorded diff applied; returns its path."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    proc = _git(root, "worktree", "add", "--detach", "--force", str(dest), commit)
    if proc.returncode != 0:
        raise RebuildError(f"git worktree add {commit} failed: {proc.stderr.strip()}")
    if diff:
        proc = _git(dest, "apply", "--whitespace=nowarn", "-", stdin=diff)
        if proc.returncode != 0:
            raise RebuildError(
                f"the recorded diff does not apply on {commit}: {proc.stderr.strip()}"
            )
    return dest


def remove_worktree(root: Path, path: Path) -> None:
    """Remove a worktree made by `build_worktree` (its logs live outside it)."""
    _git(root, "worktree", "remove", "--force", str(path))
    shutil.rmtree(path, ignore_errors=True)
    _git(root, "worktree", "prune")


def place_data(root: Path, data: dict[str, dict[str, str]], dest: Path, commit: str) -> None:
    """Check out every recorded data version into `dest` from the DVC cache or remote.

    Args:
        root: the repository whose DVC cache (and default remote) hold the data.
        data: name -> {"path" (relative to the repo root), "md5" (DVC hash)}.
        dest: the worktree to fill.
        commit: the recorded commit (for the error message).

    Raises:
        RebuildError: a version is in neither the cache nor the remote.
    """
    from dvc.fs import LocalFileSystem
    from dvc.repo import Repo
    from dvc_data.hashfile import load
    from dvc_data.hashfile.checkout import checkout
    from dvc_data.hashfile.hash_info import HashInfo

    with Repo(str(root)) as repo:
        odb = repo.cache.local
        for name, version in data.items():
            hash_info = HashInfo("md5", version["md5"])
            if not _cached(odb, hash_info):
                where = _pull(repo, hash_info)
                if not _cached(odb, hash_info):
                    raise RebuildError(
                        f"data {name} ({version['path']}, md5 {version['md5']}) is in neither "
                        f"the DVC cache ({odb.path}) nor {where}; `dvc push` it from a machine "
                        f"that has it, or rebuild it at commit {commit[:12]} with `dvc repro`"
                    )
            target = dest / version["path"]
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            target.parent.mkdir(parents=True, exist_ok=True)
            checkout(str(target), LocalFileSystem(), load(odb, hash_info), odb)
    if dest.resolve() == root.resolve():
        return
    # DVC inside the worktree shares this cache (git-ignored .dvc/config.local)
    (dest / ".dvc").mkdir(exist_ok=True)
    cache = root / ".dvc" / "cache"
    (dest / ".dvc" / "config.local").write_text(f"[cache]\n    dir = {cache.resolve()}\n")


def _cached(odb: Any, hash_info: Any) -> bool:
    if not odb.exists(hash_info.value):
        return False
    if not hash_info.isdir:
        return True
    from dvc_data.hashfile.tree import Tree

    return all(odb.exists(h.value) for _, _, h in Tree.load(odb, hash_info))


def _pull(repo: Any, hash_info: Any) -> str:
    """Fetch one object (a directory with its files) from the default remote; says which."""
    from dvc.config import NoRemoteError

    try:
        repo.cloud.pull([hash_info])
        if hash_info.isdir and repo.cache.local.exists(hash_info.value):
            from dvc_data.hashfile.tree import Tree

            repo.cloud.pull([h for _, _, h in Tree.load(repo.cache.local, hash_info)])
    except NoRemoteError:
        return "a DVC remote (none is configured)"
    except Exception as e:  # unreachable remote: say so, the data is still missing
        return f"the default DVC remote ({type(e).__name__}: {str(e).splitlines()[0]})"
    return f"the default DVC remote ({repo.config['core'].get('remote')})"


def executor_for(code: Path, executor: str) -> str:
    """The executor that can run a recorded tree's seeds: its warm workers are this code's
    `xp.execute.worker`; a tree recorded before warm workers existed, or before the modules moved
    into wings (its worker was `xp/worker.py`), runs a process per seed (`python -m xp.cli train`,
    which every recorded tree has)."""
    if executor == "warm" and not (code / "xp" / "execute" / "worker.py").exists():
        return "process"
    return executor
