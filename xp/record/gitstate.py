"""Git state of a work tree: commit, branch, dirty flag, remote, and a diff that recreates it.

`git_info` returns plain dicts (GitPython; no MLflow). The diff is `git diff HEAD --binary` plus
untracked, non-ignored source files as new-file diffs, so `git apply` of it on a clean checkout of
the commit recreates the working tree's source.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any

from xp import XpError

logger = logging.getLogger(__name__)

# Untracked files bigger than this are data or artifacts, not source; they are left out of the diff.
MAX_UNTRACKED_FILE_BYTES = 1024 * 1024
# Safety valve for an un-ignored output folder: past this many bytes of untracked source, the
# remaining files are listed as skipped instead of bloating every run's diff.
MAX_UNTRACKED_TOTAL_BYTES = 5 * 1024 * 1024
# A folder holding one of these is an environment (virtualenv, venv, conda), never source.
_ENV_MARKERS = ("pyvenv.cfg", "conda-meta/history")
# SQLite databases and their companions are never opened here: closing any descriptor of a
# database file drops every POSIX lock this process holds on it, SQLite's included, and a store
# this process (a warm worker) has open could then be read half-written or corrupted
# ("database disk image is malformed"; sqlite.org/howtocorrupt.html, 2.2)
_DATABASE_SUFFIXES = (".db", ".sqlite", ".sqlite3", ".db-wal", ".db-shm", ".db-journal",
                      ".sqlite-wal", ".sqlite-shm", ".sqlite-journal", "-wal", "-shm",
                      "-journal")  # fmt: skip

# Options that make `git diff` output appliable by `git apply` regardless of user/global config
# (external diff tools, textconv, noprefix, colour, inline submodule diffs would all break it).
_DIFF_OPTS = (
    "--binary",
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "--src-prefix=a/",
    "--dst-prefix=b/",
    "--submodule=short",
)

_C_ESCAPES = {
    0x07: "\\a",
    0x08: "\\b",
    0x09: "\\t",
    0x0A: "\\n",
    0x0B: "\\v",
    0x0C: "\\f",
    0x0D: "\\r",
    0x22: '\\"',
    0x5C: "\\\\",
}


class ProvenanceError(XpError):
    """A user-fixable problem (e.g. not a git repo when one is required)."""


# --------------------------------------------------------------------------------------------------
# Repository root
# --------------------------------------------------------------------------------------------------


def find_repo_root(start: str | Path = ".") -> Path:
    """Finds the root of the project that contains `start`.

    Args:
        start: A file or directory inside the project.

    Returns:
        The git work-tree root containing `start`; if `start` is not in a git work tree, the nearest
        ancestor holding ``dvc.yaml`` or ``.dvc/``; otherwise ``Path(start).resolve()``.
    """
    start_path = Path(start).resolve()
    probe = start_path if start_path.is_dir() else start_path.parent

    repo = _open_git_repo(probe)
    if repo is not None:
        try:
            if repo.working_tree_dir is not None:
                return Path(repo.working_tree_dir).resolve()
        finally:
            repo.close()

    for candidate in (probe, *probe.parents):
        if (candidate / "dvc.yaml").is_file() or (candidate / ".dvc").is_dir():
            return candidate
    return start_path


def _open_git_repo(path: str | Path) -> Any:
    """Returns a `git.Repo` for the work tree containing `path`, or None if there is none."""
    try:
        import git
    except ImportError as exc:  # GitPython raises ImportError when no git executable is found
        logger.warning("git is unavailable, skipping git provenance: %s", exc)
        return None

    try:
        repo = git.Repo(path, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return None
    if repo.bare:
        repo.close()
        return None
    return repo


# --------------------------------------------------------------------------------------------------
# Git
# --------------------------------------------------------------------------------------------------


def git_info(repo_dir: str | Path) -> dict:
    """Describes the git state of the work tree containing `repo_dir`.

    The ``diff`` is built so that ``git apply`` of it on a clean checkout of ``commit`` recreates
    the working tree's source: ``git diff HEAD --binary`` of tracked files followed by new-file
    diffs for untracked, non-ignored source files (UTF-8 text of at most 1 MiB).

    Args:
        repo_dir: A directory inside the git work tree.

    Returns:
        A dict with ``commit`` (hexsha or None before the first commit), ``branch`` (None when
        detached), ``dirty`` (tracked changes vs HEAD, or untracked source files present),
        ``remote`` (URL of ``origin`` or the first remote, credentials removed, or None),
        ``diff`` (str, empty when clean) and ``skipped_untracked`` (untracked, non-ignored files
        left out of the diff: environments, binaries, files over 1 MiB or past the 5 MiB budget,
        as dicts with ``path``, ``bytes``, ``md5`` and ``reason``). When
        `repo_dir` is not in a git work tree, every value is None except ``diff`` ("") and
        ``skipped_untracked`` ([]).

    Raises:
        ProvenanceError: A git command failed (e.g. the repository is owned by another user).
    """
    repo = _open_git_repo(repo_dir)
    if repo is None:
        return {
            "commit": None,
            "branch": None,
            "dirty": None,
            "remote": None,
            "diff": "",
            "skipped_untracked": [],
        }

    from git import GitCommandError

    try:
        has_commit = repo.head.is_valid()
        commit = repo.head.commit.hexsha if has_commit else None
        root = Path(repo.working_tree_dir)

        if has_commit:
            tracked_diff = _tracked_diff(repo, "HEAD")
        else:
            # Nothing committed yet: everything in the index is new relative to the empty tree.
            tracked_diff = _tracked_diff(repo, _empty_tree(repo)) if _has_index(repo) else ""

        sources, skipped = _classify_untracked(repo)
        untracked_diff = "".join(_new_file_diff(root, rel) for rel in sources)

        diff = tracked_diff
        if diff and untracked_diff and not diff.endswith("\n"):
            diff += "\n"
        diff += untracked_diff

        return {
            "commit": commit,
            "branch": _branch_name(repo),
            "dirty": (not has_commit) or bool(tracked_diff) or bool(sources),
            "remote": _remote_url(repo),
            "diff": diff,
            "skipped_untracked": skipped,
        }
    except GitCommandError as exc:
        # Typically "dubious ownership" or a corrupt repo: surface git's own explanation.
        raise ProvenanceError(f"git failed in {repo.working_tree_dir}: {exc}") from exc
    finally:
        repo.close()


def untracked_source_files(repo_dir: str | Path) -> list[str]:
    """Lists untracked, non-ignored source files of the git work tree containing `repo_dir`.

    Source files are UTF-8 text files (or symlinks) of at most 1 MiB; binaries and large files
    are not source.

    Args:
        repo_dir: A directory inside the git work tree.

    Returns:
        Posix paths relative to the work-tree root, sorted; empty when not in a git work tree.
    """
    repo = _open_git_repo(repo_dir)
    if repo is None:
        return []
    try:
        sources, _ = _classify_untracked(repo, limit_total=False)
        return sources
    finally:
        repo.close()


def _branch_name(repo: Any) -> str | None:
    if repo.head.is_detached:
        return None
    try:
        return repo.active_branch.name
    except (TypeError, ValueError):
        return None


def _remote_url(repo: Any) -> str | None:
    remotes = list(repo.remotes)
    if not remotes:
        return None
    by_name = {remote.name: remote for remote in remotes}
    remote = by_name.get("origin", remotes[0])
    try:
        url = remote.url
    except Exception:  # noqa: BLE001 - a remote without a url is just "no remote"
        return None
    return _strip_credentials(url)


def _strip_credentials(url: str) -> str:
    """Drops ``user:token@`` from URLs so tokens never end up in experiment metadata."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if not parts.scheme or "@" not in parts.netloc:
        return url  # scp-style `git@host:org/repo.git` carries no secret
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=host))


def _has_index(repo: Any) -> bool:
    return Path(repo.index.path).exists()


def _empty_tree(repo: Any) -> str:
    import subprocess

    # Not hard-coded: the empty tree id differs between SHA-1 and SHA-256 repositories.
    return repo.git.hash_object("-t", "tree", "--stdin", istream=subprocess.DEVNULL)


def _tracked_diff(repo: Any, base: str) -> str:
    """Returns `git diff <base>` of tracked files as appliable UTF-8 text."""
    raw = repo.git.diff(base, *_DIFF_OPTS, stdout_as_string=False, strip_newline_in_stdout=False)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass

    # Some changed file is text in a legacy encoding. Render those files as binary patches so the
    # whole diff stays valid UTF-8 (loggable) and still applies byte-for-byte.
    names = repo.git.diff(base, "--name-only", "-z", "--no-renames", "--no-ext-diff")
    chunks = []
    for name in filter(None, names.split("\0")):
        spec = f":(top,literal){name}"
        raw = _raw_diff(repo.git, base, spec)
        try:
            chunks.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            chunks.append(_forced_binary_diff(repo, base, spec))
    return "".join(chunks)


def _raw_diff(git_cmd: Any, base: str, spec: str) -> bytes:
    """`git diff <base> -- <spec>` as bytes, in the appliable form (_DIFF_OPTS)."""
    return git_cmd.diff(
        base, *_DIFF_OPTS, "--no-renames", "--", spec,
        stdout_as_string=False, strip_newline_in_stdout=False,
    )  # fmt: skip


def _forced_binary_diff(repo: Any, base: str, spec: str) -> str:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        attributes = Path(tmp, "attributes")
        attributes.write_text("* -diff\n")
        raw = _raw_diff(repo.git(c=f"core.attributesFile={attributes}"), base, spec)
    # A repo .gitattributes can override `-diff`; then this file's diff cannot be exact as text.
    return raw.decode("utf-8", errors="replace")


def _classify_untracked(repo: Any, limit_total: bool = True) -> tuple[list[str], list[dict]]:
    """Splits untracked, non-ignored files into (sorted source paths, what was left out).

    Left out, each with its reason: whole environments (a folder holding `pyvenv.cfg` or
    `conda-meta/history`, or a `site-packages` folder) as one entry with their file count and
    size; every other file with its size and md5: binaries, files over 1 MiB, files past the 5 MiB
    budget, nested repositories.
    """
    root = Path(repo.working_tree_dir)
    listing = repo.git.ls_files("--others", "--exclude-standard", "-z")
    budget = MAX_UNTRACKED_TOTAL_BYTES if limit_total else None
    sources: list[str] = []
    skipped: list[dict] = []
    environments: dict[str, dict] = {}
    used = 0
    # Shallow files first, so top-level scripts win the budget over a deep un-ignored folder.
    rels = sorted(filter(None, listing.split("\0")), key=lambda rel: (rel.count("/"), rel))
    env_roots = _environment_roots(rels)
    for rel in rels:
        env = next((e for e in env_roots if rel.startswith(e)), None)
        if env is not None:  # not even read: an environment can hold 100,000 files
            entry = environments.setdefault(
                env, {"path": env, "files": 0, "bytes": 0, "md5": None, "reason": "environment"}
            )
            entry["files"] += 1
            entry["bytes"] += _lsize(root / rel)
            continue
        if rel.endswith("/"):
            skipped.append(_skip(root, rel, "nested repository"))
            continue
        if rel.endswith(_DATABASE_SUFFIXES):  # sized, never opened (see _DATABASE_SUFFIXES)
            why = "a database file (never opened: a store may be open in this process)"
            skipped.append({"path": rel, "bytes": _lsize(root / rel), "md5": None, "reason": why})
            continue
        size, why = _source_size(root / rel)
        if size is not None and budget is not None and used + size > budget:
            size, why = None, f"past the {MAX_UNTRACKED_TOTAL_BYTES // 2**20} MiB budget"
        if size is None:
            skipped.append(_skip(root, rel, why))
            continue
        used += size
        sources.append(rel)
    skipped.extend(environments.values())
    return sorted(sources), sorted(skipped, key=lambda e: e["path"])


def _environment_roots(rels: list[str]) -> list[str]:
    """Folders (with a trailing /) that are Python environments, among untracked paths."""
    roots = set()
    for rel in rels:
        for marker in _ENV_MARKERS:
            if rel.endswith("/" + marker):
                roots.add(rel[: -len(marker)])
        parts = rel.split("/")
        if "site-packages" in parts[:-1]:
            roots.add("/".join(parts[: parts.index("site-packages") + 1]) + "/")
    return sorted(roots, key=len)


def _lsize(path: Path) -> int:
    try:
        return path.lstat().st_size
    except OSError:
        return 0


def _skip(root: Path, rel: str, reason: str) -> dict:
    """What a left-out file was: enough to tell later whether it changed."""
    import hashlib

    path = root / rel
    entry: dict[str, Any] = {"path": rel, "bytes": None, "md5": None, "reason": reason}
    try:
        if path.is_file() and not path.is_symlink():
            digest = hashlib.md5()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            entry.update(bytes=path.stat().st_size, md5=digest.hexdigest())
    except OSError:
        pass
    return entry


def _source_size(path: Path) -> tuple[int | None, str]:
    """(byte size, "") if `path` counts as a source file, else (None, why not)."""
    try:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            os.readlink(path).encode("utf-8")
            return st.st_size, ""
        if not stat.S_ISREG(st.st_mode):
            return None, "not a regular file"
        if st.st_size > MAX_UNTRACKED_FILE_BYTES:
            return None, f"larger than {MAX_UNTRACKED_FILE_BYTES // 2**20} MiB"
        data = path.read_bytes()
    except (OSError, UnicodeError):
        return None, "unreadable"
    if b"\0" in data:
        return None, "binary"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    return len(data), ""


def _quote_path(path: str) -> str:
    """Quotes a diff header path the way git does, so `git apply` reads it back exactly."""
    raw = path.encode("utf-8", "surrogateescape")
    if not any(b < 0x20 or b >= 0x7F or b in (0x22, 0x5C) for b in raw):
        return path
    out = []
    for b in raw:
        if b in _C_ESCAPES:
            out.append(_C_ESCAPES[b])
        elif 0x20 <= b < 0x7F:
            out.append(chr(b))
        else:
            out.append(f"\\{b:03o}")
    return '"' + "".join(out) + '"'


def _new_file_diff(root: Path, rel: str) -> str:
    """Renders an untracked file as a git new-file diff."""
    path = root / rel
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        # git stores a symlink as a blob holding its target, without a trailing newline.
        mode = "120000"
        content_lines = [os.readlink(path)]
        no_newline = True
    else:
        mode = "100755" if st.st_mode & stat.S_IXUSR else "100644"
        content = path.read_bytes().decode("utf-8")
        no_newline = bool(content) and not content.endswith("\n")
        body = content if no_newline else content[:-1]
        # Split on "\n" only: str.splitlines() would also split on \r, \x0b, \u2028, ...
        content_lines = body.split("\n") if content else []

    a_name, b_name = _quote_path(f"a/{rel}"), _quote_path(f"b/{rel}")
    header = f"diff --git {a_name} {b_name}\nnew file mode {mode}\n"
    if not content_lines:
        return header
    count = len(content_lines)
    hunk = "@@ -0,0 +1 @@\n" if count == 1 else f"@@ -0,0 +1,{count} @@\n"
    lines = "".join(f"+{line}\n" for line in content_lines)
    tail = "\\ No newline at end of file\n" if no_newline else ""
    # git ends the name with a TAB when it holds a space, so patch(1) does not read on past it.
    plus_name = f"{b_name}\t" if " " in b_name else b_name
    return f"{header}--- /dev/null\n+++ {plus_name}\n{hunk}{lines}{tail}"
