"""Tests for xp.record.provenance: git state capture, DVC data versions and environment info."""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import stat
import subprocess
import sys
import types
from pathlib import Path

import git
import pytest
import yaml

from xp.record import gitstate, provenance
from xp.record.provenance import DataMissingError, ProvenanceError

# --------------------------------------------------------------------------------------------------
# git helpers
# --------------------------------------------------------------------------------------------------


def _init_repo(path: Path) -> git.Repo:
    repo = git.Repo.init(path, initial_branch="main")
    with repo.config_writer() as cfg:
        cfg.set_value("user", "name", "Test")
        cfg.set_value("user", "email", "test@example.com")
        cfg.set_value("commit", "gpgsign", "false")
    return repo


def _commit_all(repo: git.Repo, message: str = "commit") -> str:
    repo.git.add("-A")
    repo.index.commit(message)
    return repo.head.commit.hexsha


@pytest.fixture
def committed_repo(tmp_path: Path) -> git.Repo:
    repo_dir = tmp_path / "repo"
    repo_dir.mkdir()
    repo = _init_repo(repo_dir)
    (repo_dir / ".gitignore").write_text("*.log\nbuild/\n")
    (repo_dir / "train.py").write_text("print('train')\nlr = 0.1\n")
    (repo_dir / "pkg").mkdir()
    (repo_dir / "pkg" / "mod.py").write_text("X = 1\n")
    (repo_dir / "weights.bin").write_bytes(bytes(range(256)) * 4)
    (repo_dir / "gone.txt").write_text("to be deleted\n")
    _commit_all(repo, "initial")
    return repo


def _apply_on_fresh_clone(src: git.Repo, commit: str | None, diff: str, dest: Path) -> Path:
    """Checks out `commit` of `src` at `dest` and applies `diff` there; returns `dest`."""
    if commit is None:
        git.Repo.init(dest)
    else:
        clone = git.Repo.clone_from(src.working_tree_dir, dest)
        clone.git.checkout(commit)
    patch = dest.parent / f"{dest.name}.patch"
    patch.write_bytes(diff.encode("utf-8"))
    if diff:
        subprocess.run(["git", "apply", "--whitespace=nowarn", str(patch)], cwd=dest, check=True)
    return dest


def _snapshot(root: Path, ignore: set[str] = frozenset()) -> dict[str, tuple[bytes, bool]]:
    """Maps relative path -> (bytes or link target, executable) for every file outside .git."""
    snap = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if (
            rel.split("/")[0] == ".git"
            or rel in ignore
            or (path.is_dir() and not path.is_symlink())
        ):
            continue
        if path.is_symlink():
            snap[rel] = (os.readlink(path).encode(), False)
        else:
            snap[rel] = (path.read_bytes(), bool(path.stat().st_mode & stat.S_IXUSR))
    return snap


# --------------------------------------------------------------------------------------------------
# git_info
# --------------------------------------------------------------------------------------------------


def test_git_info_clean_repo(committed_repo: git.Repo) -> None:
    committed_repo.create_remote("origin", "https://user:s3cret@example.com/org/proj.git")

    info = provenance.git_info(committed_repo.working_tree_dir)

    assert info["commit"] == committed_repo.head.commit.hexsha
    assert info["branch"] == "main"
    assert info["dirty"] is False
    assert info["diff"] == ""
    assert info["skipped_untracked"] == []
    # Tokens embedded in remote URLs must not leak into experiment metadata.
    assert info["remote"] == "https://example.com/org/proj.git"


def test_git_info_prefers_origin_then_first_remote(committed_repo: git.Repo) -> None:
    committed_repo.create_remote("upstream", "git@example.com:org/up.git")
    assert provenance.git_info(committed_repo.working_tree_dir)["remote"] == (
        "git@example.com:org/up.git"
    )
    committed_repo.create_remote("origin", "git@example.com:org/proj.git")
    assert provenance.git_info(committed_repo.working_tree_dir)["remote"] == (
        "git@example.com:org/proj.git"
    )


def test_git_info_dirty_diff_reproduces_working_tree(
    committed_repo: git.Repo, tmp_path: Path
) -> None:
    root = Path(committed_repo.working_tree_dir)
    commit = committed_repo.head.commit.hexsha
    (root / "train.py").write_text("print('train')\nlr = 0.01\n")
    (root / "weights.bin").write_bytes(bytes(range(255, -1, -1)) * 4)
    (root / "gone.txt").unlink()
    (root / "new.py").write_text("def f():\n    return 1\n")
    (root / "pkg" / "staged.py").write_text("Y = 2\n")
    committed_repo.git.add("pkg/staged.py")
    (root / "no newline.py").write_text("x = 1")
    (root / "crlf.py").write_bytes(b"a = 1\r\nb = 2\r\n")
    (root / "empty.py").write_text("")
    (root / "caf\u00e9.py").write_text("# \u00e9\n")
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o755)
    (root / "link.py").symlink_to("new.py")
    # Ignored and non-source files must stay out of the diff.
    (root / "debug.log").write_text("noise\n")
    (root / "build").mkdir()
    (root / "build" / "out.py").write_text("ignored = True\n")
    (root / "blob.dat").write_bytes(b"\x00\x01binary")
    (root / "big.txt").write_text("x" * (gitstate.MAX_UNTRACKED_FILE_BYTES + 1))

    info = provenance.git_info(root)

    assert info["commit"] == commit
    assert info["dirty"] is True
    diff = info["diff"]
    assert "lr = 0.01" in diff
    assert "new.py" in diff and "return 1" in diff
    assert "debug.log" not in diff and "build/out.py" not in diff
    assert "blob.dat" not in diff and "big.txt" not in diff
    skipped = {e["path"]: e for e in info["skipped_untracked"]}
    assert set(skipped) == {"big.txt", "blob.dat"}
    assert skipped["blob.dat"]["reason"] == "binary"
    assert skipped["blob.dat"]["md5"] == hashlib.md5(b"\x00\x01binary").hexdigest()
    assert skipped["big.txt"]["reason"] == "larger than 1 MiB"
    assert skipped["big.txt"]["bytes"] == gitstate.MAX_UNTRACKED_FILE_BYTES + 1

    clone = _apply_on_fresh_clone(committed_repo, commit, diff, tmp_path / "clone")
    skipped = {"debug.log", "build/out.py", "blob.dat", "big.txt"}
    assert _snapshot(clone) == _snapshot(root, ignore=skipped)


def test_git_info_non_utf8_tracked_change_is_appliable(
    committed_repo: git.Repo, tmp_path: Path
) -> None:
    root = Path(committed_repo.working_tree_dir)
    (root / "latin.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    commit = _commit_all(committed_repo)
    (root / "latin.txt").write_bytes("na\xefve caf\xe9\n".encode("latin-1"))
    (root / "train.py").write_text("changed = True\n")

    info = provenance.git_info(root)

    assert "changed = True" in info["diff"]  # UTF-8 files stay readable text
    clone = _apply_on_fresh_clone(committed_repo, commit, info["diff"], tmp_path / "clone")
    assert _snapshot(clone) == _snapshot(root)


def test_git_info_untracked_budget_keeps_shallow_sources(
    committed_repo: git.Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gitstate, "MAX_UNTRACKED_TOTAL_BYTES", 100)
    root = Path(committed_repo.working_tree_dir)
    (root / "venv" / "lib").mkdir(parents=True)
    for i in range(5):
        (root / "venv" / "lib" / f"m{i}.py").write_text("x" * 40 + "\n")
    (root / "zz_top.py").write_text("TOP = 1\n")

    info = provenance.git_info(root)

    assert "TOP = 1" in info["diff"]
    skipped = info["skipped_untracked"]
    assert [e["path"] for e in skipped] == [f"venv/lib/m{i}.py" for i in range(2, 5)]
    assert {e["reason"] for e in skipped} == {"past the 0 MiB budget"}
    assert all(e["bytes"] == 41 and len(e["md5"]) == 32 for e in skipped)


def test_a_stray_virtualenv_stays_out_of_the_diff(committed_repo: git.Repo) -> None:
    """An un-ignored virtualenv (any name) or site-packages folder is one skipped entry, never
    diff content: the diff stays the code, and it stays under its 5 MiB budget."""
    root = Path(committed_repo.working_tree_dir)
    env = root / "myenv"
    (env / "lib" / "python3.11" / "site-packages" / "pkg").mkdir(parents=True)
    (env / "pyvenv.cfg").write_text("home = /usr/bin\n")
    for i in range(50):
        (env / "lib" / "python3.11" / "site-packages" / "pkg" / f"m{i}.py").write_text("x = 1\n")
    (root / "vendor" / "site-packages" / "lib").mkdir(parents=True)
    (root / "vendor" / "site-packages" / "lib" / "a.py").write_text("a = 1\n")
    (root / "new_model.py").write_text("MODEL = 1\n")

    info = provenance.git_info(root)

    assert "MODEL = 1" in info["diff"] and "myenv" not in info["diff"]
    assert "vendor/" not in info["diff"]
    envs = {e["path"]: e for e in info["skipped_untracked"]}
    assert set(envs) == {"myenv/", "vendor/site-packages/"}
    assert envs["myenv/"]["files"] == 51 and envs["myenv/"]["reason"] == "environment"
    assert envs["myenv/"]["bytes"] == 50 * 6 + len("home = /usr/bin\n")
    from xp.record.tags import skipped_summary

    line = skipped_summary(info)
    assert line.startswith("52 untracked file(s), 0.0 MiB in all, left out of the recorded diff")
    assert "environments: myenv/, vendor/site-packages/" in line


def test_git_info_ignores_gitignored_untracked_files(committed_repo: git.Repo) -> None:
    root = Path(committed_repo.working_tree_dir)
    (root / "train.log").write_text("epoch 1\n")

    info = provenance.git_info(root)

    assert info["dirty"] is False
    assert info["diff"] == ""


def test_git_info_detached_head_has_no_branch(committed_repo: git.Repo) -> None:
    committed_repo.git.checkout(committed_repo.head.commit.hexsha)

    info = provenance.git_info(committed_repo.working_tree_dir)

    assert info["branch"] is None
    assert info["commit"] == committed_repo.head.commit.hexsha


def test_git_info_from_subdirectory(committed_repo: git.Repo) -> None:
    info = provenance.git_info(Path(committed_repo.working_tree_dir) / "pkg")
    assert info["commit"] == committed_repo.head.commit.hexsha


def test_git_info_repo_without_commits(tmp_path: Path) -> None:
    root = tmp_path / "fresh"
    root.mkdir()
    repo = _init_repo(root)
    (root / "a.py").write_text("A = 1\n")
    (root / "staged.py").write_text("S = 1\n")
    repo.git.add("staged.py")

    info = provenance.git_info(root)

    assert info["commit"] is None
    assert info["branch"] == "main"
    assert info["dirty"] is True
    assert "A = 1" in info["diff"] and "S = 1" in info["diff"]
    rebuilt = _apply_on_fresh_clone(repo, None, info["diff"], tmp_path / "rebuilt")
    assert _snapshot(rebuilt) == _snapshot(root)


def test_git_info_not_a_repo(tmp_path: Path) -> None:
    assert provenance.git_info(tmp_path) == {
        "commit": None,
        "branch": None,
        "dirty": None,
        "remote": None,
        "diff": "",
        "skipped_untracked": [],
    }


def test_untracked_source_files(committed_repo: git.Repo) -> None:
    root = Path(committed_repo.working_tree_dir)
    (root / "pkg" / "new.py").write_text("N = 1\n")
    (root / "x.log").write_text("ignored\n")
    (root / "data.bin").write_bytes(b"\x00" * 10)

    assert provenance.untracked_source_files(root) == ["pkg/new.py"]
    assert provenance.untracked_source_files(root.parent) == []


def test_an_untracked_store_is_never_opened_so_its_locks_hold(committed_repo: git.Repo) -> None:
    """Closing any descriptor of a SQLite file drops this process's locks on it: reading an
    untracked store for the recorded diff once let another process write under a transaction
    still open here (a repeat's store read back as "database disk image is malformed")."""
    import sqlite3

    root = Path(committed_repo.working_tree_dir)
    db = root / "runs.db"  # a store in the work tree, not ignored
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE t (x)")
    con.execute("BEGIN IMMEDIATE")  # this process holds the write lock
    con.execute("INSERT INTO t VALUES (1)")
    info = provenance.git_info(root)
    other = ("import sqlite3, sys\nc = sqlite3.connect(sys.argv[1], timeout=0, "
             "isolation_level=None)\ntry:\n    c.execute('BEGIN IMMEDIATE')\n    print('taken')\n"
             "except sqlite3.OperationalError as e:\n    print(e)\n")  # fmt: skip
    said = subprocess.run([sys.executable, "-c", other, str(db)], capture_output=True, text=True)
    con.execute("COMMIT")
    assert said.stdout.strip() == "database is locked"  # the lock held through the provenance
    left_out = {e["path"]: e for e in info["skipped_untracked"]}
    assert {"runs.db", "runs.db-wal", "runs.db-shm"} <= set(left_out)
    assert left_out["runs.db"]["md5"] is None and left_out["runs.db"]["bytes"] > 0


# --------------------------------------------------------------------------------------------------
# find_repo_root
# --------------------------------------------------------------------------------------------------


def test_find_repo_root_git(committed_repo: git.Repo) -> None:
    root = Path(committed_repo.working_tree_dir).resolve()
    assert provenance.find_repo_root(root / "pkg") == root
    assert provenance.find_repo_root(root / "pkg" / "mod.py") == root


def test_find_repo_root_dvc_without_git(tmp_path: Path) -> None:
    (tmp_path / "proj" / "src").mkdir(parents=True)
    (tmp_path / "proj" / "dvc.yaml").write_text("stages: {}\n")
    assert provenance.find_repo_root(tmp_path / "proj" / "src") == (tmp_path / "proj").resolve()

    (tmp_path / "other" / "deep").mkdir(parents=True)
    (tmp_path / "other" / ".dvc").mkdir()
    assert provenance.find_repo_root(tmp_path / "other" / "deep") == (tmp_path / "other").resolve()


def test_find_repo_root_fallback(tmp_path: Path) -> None:
    assert provenance.find_repo_root(tmp_path) == tmp_path.resolve()


# --------------------------------------------------------------------------------------------------
# data_versions
# --------------------------------------------------------------------------------------------------

_DVC_YAML = """\
stages:
  prepare:
    cmd: python -c "{script}"
    outs:
      - data/train.txt
      - data/features
"""
_PREPARE = (
    "import os; os.makedirs('data/features/sub', exist_ok=True); "
    "open('data/train.txt', 'w').write('1,2,3\\n'); "
    "open('data/features/a.txt', 'w').write('a\\n'); "
    "open('data/features/sub/b.txt', 'w').write('b\\n')"
)


@pytest.fixture(scope="module")
def dvc_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git + DVC repo where `dvc repro` has produced a file and a directory output."""
    from dvc.repo import Repo

    root = tmp_path_factory.mktemp("dvc") / "proj"
    root.mkdir()
    repo = _init_repo(root)
    Repo.init(str(root)).close()
    (root / "dvc.yaml").write_text(_DVC_YAML.format(script=_PREPARE))
    (root / "raw.csv").write_text("x,y\n1,2\n")
    cwd = os.getcwd()
    os.chdir(root)  # reproduce() resolves its default target from the cwd
    try:
        with Repo(str(root)) as dvc_repo:
            dvc_repo.reproduce()
    finally:
        os.chdir(cwd)
    _commit_all(repo, "pipeline")
    return root


@pytest.fixture
def dvc_project(dvc_template: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "proj"
    shutil.copytree(dvc_template, dest, symlinks=True)
    return dest


def _lock_md5(root: Path, path: str) -> str:
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    outs = {out["path"]: out["md5"] for out in lock["stages"]["prepare"]["outs"]}
    return outs[path]


def test_data_versions_clean_outputs_match_dvc_lock(dvc_project: Path) -> None:
    versions = provenance.data_versions(
        {"train": "data/train.txt", "features": dvc_project / "data" / "features"}, dvc_project
    )

    train = versions["train"]
    assert train["path"] == "data/train.txt"
    assert train["dvc_status"] == "clean"
    assert train["md5"] == train["recorded_md5"] == _lock_md5(dvc_project, "data/train.txt")
    assert train["md5"] == hashlib.md5(b"1,2,3\n").hexdigest()

    features = versions["features"]
    assert features["path"] == "data/features"
    assert features["dvc_status"] == "clean"
    assert features["md5"].endswith(".dir")
    assert features["md5"] == _lock_md5(dvc_project, "data/features")


def test_data_versions_modified_file(dvc_project: Path) -> None:
    before = provenance.data_versions({"train": "data/train.txt"}, dvc_project)["train"]
    (dvc_project / "data" / "train.txt").write_text("9,9,9\n")

    after = provenance.data_versions({"train": "data/train.txt"}, dvc_project)["train"]

    assert after["dvc_status"] == "modified"
    assert after["md5"] != before["md5"]
    assert after["md5"] == hashlib.md5(b"9,9,9\n").hexdigest()
    assert after["recorded_md5"] == _lock_md5(dvc_project, "data/train.txt")


def test_data_versions_file_inside_tracked_directory(dvc_project: Path) -> None:
    paths = {"b": "data/features/sub/b.txt", "a": "data/features/a.txt"}

    clean = provenance.data_versions(paths, dvc_project)
    assert clean["b"]["dvc_status"] == "clean"
    assert clean["b"]["md5"] == clean["b"]["recorded_md5"] == hashlib.md5(b"b\n").hexdigest()
    assert clean["b"]["output"] == "data/features"

    (dvc_project / "data" / "features" / "a.txt").write_text("changed\n")
    after = provenance.data_versions(paths, dvc_project)
    assert after["a"]["dvc_status"] == "modified"
    assert after["a"]["recorded_md5"] == hashlib.md5(b"a\n").hexdigest()
    assert after["b"]["dvc_status"] == "clean"  # siblings of a changed file are unaffected


def test_data_versions_inside_directory_without_cached_listing(dvc_project: Path) -> None:
    shutil.rmtree(dvc_project / ".dvc" / "cache")
    versions = provenance.data_versions({"b": "data/features/sub/b.txt"}, dvc_project)
    assert versions["b"]["dvc_status"] == "clean"

    (dvc_project / "data" / "features" / "a.txt").write_text("changed\n")
    versions = provenance.data_versions({"b": "data/features/sub/b.txt"}, dvc_project)
    # The directory changed and its listing is unavailable, so b cannot be shown unchanged.
    assert versions["b"]["dvc_status"] == "modified"


def test_data_versions_modified_directory(dvc_project: Path) -> None:
    (dvc_project / "data" / "features" / "c.txt").write_text("new\n")
    features = provenance.data_versions({"f": "data/features"}, dvc_project)["f"]
    assert features["dvc_status"] == "modified"
    assert features["md5"].endswith(".dir")
    assert features["md5"] != _lock_md5(dvc_project, "data/features")


def test_data_versions_untracked_file(dvc_project: Path) -> None:
    raw = provenance.data_versions({"raw": "raw.csv"}, dvc_project)["raw"]
    assert raw == {
        "path": "raw.csv",
        "md5": hashlib.md5(b"x,y\n1,2\n").hexdigest(),
        "dvc_status": "untracked",
        "recorded_md5": None,
        "output": None,
    }
    assert re.fullmatch(r"[0-9a-f]{32}", raw["md5"])


def test_data_versions_missing_output_names_stage(dvc_project: Path) -> None:
    (dvc_project / "data" / "train.txt").unlink()
    with pytest.raises(DataMissingError) as excinfo:
        provenance.data_versions({"train": "data/train.txt"}, dvc_project)
    message = str(excinfo.value)
    assert "'data/train.txt' (train)" in message
    assert "`dvc repro prepare`" in message
    assert "dvc pull" in message
    assert isinstance(excinfo.value, ProvenanceError)


def test_data_versions_missing_untracked_path(dvc_project: Path) -> None:
    with pytest.raises(DataMissingError, match=r"'data/nope.npz' \(x\).*`dvc repro`"):
        provenance.data_versions({"x": "data/nope.npz"}, dvc_project)


def test_data_versions_dvc_add_tracked_file(tmp_path: Path) -> None:
    from dvc.repo import Repo

    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "1.png").write_bytes(b"\x89PNG fake")
    with Repo.init(str(tmp_path), no_scm=True) as dvc_repo:
        dvc_repo.add(str(tmp_path / "images"))

    versions = provenance.data_versions({"img": "images"}, tmp_path)
    assert versions["img"]["dvc_status"] == "clean"
    assert versions["img"]["md5"].endswith(".dir")

    shutil.rmtree(tmp_path / "images")
    with pytest.raises(DataMissingError, match=r"`dvc pull images.dvc`"):
        provenance.data_versions({"img": "images"}, tmp_path)


def test_data_versions_without_dvc(tmp_path: Path) -> None:
    (tmp_path / "d" / "nested").mkdir(parents=True)
    (tmp_path / "d" / "x.bin").write_bytes(b"\x00\x01\x02")
    (tmp_path / "d" / "nested" / "y.txt").write_text("y\n")
    (tmp_path / "f.txt").write_text("hello\n")

    versions = provenance.data_versions({"f": "f.txt", "d": tmp_path / "d"}, tmp_path)

    assert versions["f"]["dvc_status"] == "untracked"
    assert versions["f"]["md5"] == hashlib.md5(b"hello\n").hexdigest()
    assert versions["d"]["dvc_status"] == "untracked"
    assert re.fullmatch(r"[0-9a-f]{32}\.dir", versions["d"]["md5"])
    assert not (tmp_path / ".dvc").exists()  # fingerprinting must not initialise DVC


def test_data_versions_dir_hash_matches_dvc_add(tmp_path: Path) -> None:
    """The untracked directory hash is the one `dvc add` would record."""
    from dvc.repo import Repo

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_text("a\n")
    (tmp_path / "d" / "b").write_text("b\n")
    before = provenance.data_versions({"d": "d"}, tmp_path)["d"]["md5"]
    with Repo.init(str(tmp_path), no_scm=True) as dvc_repo:
        dvc_repo.add(str(tmp_path / "d"))
    recorded = yaml.safe_load((tmp_path / "d.dvc").read_text())["outs"][0]["md5"]
    assert before == recorded


# --------------------------------------------------------------------------------------------------
# environment
# --------------------------------------------------------------------------------------------------


class _FakeCuda:
    def __init__(self, available: bool) -> None:
        self._available = available

    def is_available(self) -> bool:
        return self._available

    def get_device_name(self, index: int) -> str:
        return f"Fake GPU {index}"


def _fake_torch(cuda_available: bool) -> types.SimpleNamespace:
    # Importing real torch takes seconds; device detection only needs these attributes.
    return types.SimpleNamespace(
        cuda=_FakeCuda(cuda_available),
        version=types.SimpleNamespace(cuda="12.1" if cuda_available else None),
        backends=types.SimpleNamespace(mps=_FakeCuda(False)),
    )


def test_environment_info_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", _fake_torch(cuda_available=False))

    info = provenance.environment_info()

    expected = {"python", "torch", "transformers", "mlflow", "dvc", "numpy"}
    assert expected | {"platform", "cpu_count", "device", "cuda"} <= set(info)
    assert info["python"] == platform.python_version()
    assert info["dvc"] is not None and info["torch"] is not None
    assert info["cpu_count"] == os.cpu_count()
    assert info["device"] == "cpu"
    assert info["cuda"] is None


def test_environment_info_detects_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", _fake_torch(cuda_available=True))
    info = provenance.environment_info()
    assert info["device"] == "cuda:Fake GPU 0"
    assert info["cuda"] == "12.1"


def test_environment_info_explicit_device_and_no_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    assert provenance.environment_info(device="cuda:1")["device"] == "cuda:1"
    info = provenance.environment_info()
    assert info["device"] == "cpu"
    assert info["cuda"] is None


def test_pip_freeze() -> None:
    frozen = provenance.pip_freeze()
    lines = frozen.splitlines()
    assert any(line.startswith("torch==") for line in lines)
    assert any(line.lower().startswith("gitpython==") for line in lines)
    assert lines == sorted(lines, key=str.lower)
    assert all("==" in line for line in lines)
