"""Provenance capture: DVC data versions and the software environment (git state:
`xp.record.gitstate`, re-exported here).

Everything here returns plain dicts/strings so callers decide how to record them; this module never
talks to MLflow. Heavy libraries (GitPython, DVC, torch) are imported inside the functions that need
them so that ``import xp.record.provenance`` stays cheap.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import re
import sys
from pathlib import Path
from typing import Any

from xp.record.gitstate import (  # noqa: F401  (re-exported: callers use xp.record.provenance)
    ProvenanceError,
    find_repo_root,
    git_info,
    untracked_source_files,
)

logger = logging.getLogger(__name__)

_VERSIONED_PACKAGES = ("torch", "transformers", "mlflow", "dvc", "numpy")


class DataMissingError(ProvenanceError):
    """A data path given to `data_versions` does not exist in the working tree.

    Attributes:
        name: The logical name the caller gave the path (e.g. ``"train"``).
        path: The path, relative to the repo root when possible.
        stage: The DVC stage that produces the path, as `dvc repro` addresses it, if any.
        dvc_file: The ``.dvc`` file that tracks the path, if any.
    """

    def __init__(
        self,
        name: str,
        path: str | Path,
        stage: str | None = None,
        dvc_file: str | None = None,
    ):
        self.name = name
        self.path = str(path)
        self.stage = stage
        self.dvc_file = dvc_file
        if stage:
            hint = f"run `dvc repro {stage}` to build it, or `dvc pull` to fetch it"
        elif dvc_file:
            hint = f"run `dvc pull {dvc_file}` to fetch it"
        else:
            hint = "run `dvc repro` to build it, or `dvc pull` to fetch it"
        super().__init__(f"data file '{self.path}' ({name}) is missing: {hint}")


# --------------------------------------------------------------------------------------------------
# DVC data versions
# --------------------------------------------------------------------------------------------------


def data_versions(paths: dict[str, str | Path], repo_dir: str | Path) -> dict[str, dict]:
    """Fingerprints data files/directories with DVC's content hashes and DVC tracking status.

    A path is tracked when it is, or lies inside, an output recorded by ``dvc.lock`` or a ``.dvc``
    file. For a file inside a tracked directory the hash is the file's own, compared against its
    entry in the directory listing from the DVC cache; if that listing is not cached, the whole
    directory is rehashed and the file counts as clean only if the directory is unchanged.
    Hashes come from DVC's state database when file stats are unchanged, so repeated calls are
    cheap. Works without ``.dvc/``: hashes are still DVC's, and paths are untracked unless a
    ``dvc.yaml`` declares them.

    Args:
        paths: Logical name -> file or directory; relative paths are relative to `repo_dir`.
        repo_dir: The project root (normally `find_repo_root()`).

    Returns:
        Name -> ``{"path": posix path relative to repo_dir, "md5": DVC hash of the working copy
        (``"<md5>.dir"`` for directories), "dvc_status": "clean" | "modified" | "untracked",
        "recorded_md5": hash DVC has on record or None, "output": the covering DVC output's path
        relative to repo_dir, or None}``.

    Raises:
        DataMissingError: A path does not exist; the message says how to produce it.
        ProvenanceError: DVC's pipeline files cannot be parsed.
    """
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    root = os.path.abspath(repo_dir)
    try:
        repo = Repo(root, uninitialized=True)
    except DvcException as exc:
        raise ProvenanceError(f"cannot open DVC repository at {root}: {exc}") from exc

    with repo:
        try:
            outs = [out for out in repo.index.outs if out.protocol == "local"]
        except DvcException as exc:
            raise ProvenanceError(
                f"cannot read DVC pipeline files in {repo.root_dir}: {exc}"
            ) from exc

        result = {}
        for name, given in paths.items():
            abs_path = os.path.abspath(os.path.join(root, os.fspath(given)))
            rel = Path(os.path.relpath(abs_path, root)).as_posix()
            out = _covering_output(outs, abs_path)
            if not os.path.exists(abs_path):
                raise _missing_error(name, rel, out, repo.root_dir)
            entry = _version_of(repo, out, abs_path) if out else _untracked_version(repo, abs_path)
            entry["output"] = (
                Path(os.path.relpath(out.fs_path, root)).as_posix() if out is not None else None
            )
            result[name] = {"path": rel, **entry}
        return result


def _covering_output(outs: list, abs_path: str) -> Any:
    """Returns the DVC output that is, or contains, `abs_path` (the deepest one), or None."""
    matches = [out for out in outs if out.fs.isin_or_eq(abs_path, out.fs_path)]
    return max(matches, key=lambda out: len(out.fs_path), default=None)


def _missing_error(name: str, rel: str, out: Any, dvc_root: str) -> DataMissingError:
    if out is None:
        return DataMissingError(name, rel)
    stage = out.stage
    dvcfile_rel = Path(os.path.relpath(stage.path, dvc_root)).as_posix()
    stage_name = getattr(stage, "name", None)
    if stage_name and not stage.is_data_source:
        # `dvc repro` addresses stages outside the root dvc.yaml as `<dvcfile>:<stage>`.
        target = stage_name if dvcfile_rel == "dvc.yaml" else f"{dvcfile_rel}:{stage_name}"
        return DataMissingError(name, rel, stage=target)
    return DataMissingError(name, rel, dvc_file=dvcfile_rel)


def _staging_odb(repo: Any, hash_name: str) -> Any:
    """Returns an object DB to stage hashing through (it carries DVC's state database)."""
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs.local import LocalFileSystem

    cache = repo.cache
    odb = cache.legacy if hash_name != "md5" else cache.local
    if odb is not None:
        return odb
    # No .dvc/ (so no cache): hashing still works through a throwaway, never-written DB.
    return HashFileDB(LocalFileSystem(), os.path.join(repo.root_dir, ".dvc", "cache"))


def _hash_path(repo: Any, abs_path: str, hash_name: str = "md5") -> str:
    """Computes DVC's hash of a file, or DVC's ``.dir`` hash of a directory."""
    from dvc_data.hashfile.build import build
    from dvc_objects.fs.local import LocalFileSystem

    _, _, obj = build(
        _staging_odb(repo, hash_name),
        abs_path,
        LocalFileSystem(),
        hash_name,
        ignore=repo.dvcignore,
        dry_run=True,
    )
    return obj.hash_info.value


def _untracked_version(repo: Any, abs_path: str) -> dict:
    return {"md5": _hash_path(repo, abs_path), "dvc_status": "untracked", "recorded_md5": None}


def _version_of(repo: Any, out: Any, abs_path: str) -> dict:
    md5 = _hash_path(repo, abs_path, out.hash_name)
    whole_recorded = out.hash_info.value if out.hash_info else None

    if abs_path == out.fs_path:
        recorded = whole_recorded
    else:
        recorded = _recorded_entry(repo, out, abs_path)
        if recorded is _NOT_CACHED:
            # Without the cached listing, the file is known unchanged only if its directory is.
            unchanged = whole_recorded is not None and (
                _hash_path(repo, out.fs_path, out.hash_name) == whole_recorded
            )
            recorded = md5 if unchanged else None

    status = "clean" if recorded is not None and recorded == md5 else "modified"
    return {"md5": md5, "dvc_status": status, "recorded_md5": recorded}


_NOT_CACHED = object()


def _recorded_entry(repo: Any, out: Any, abs_path: str) -> Any:
    """Returns the recorded hash of `abs_path` inside directory output `out`.

    Returns None when the listing has no such entry, or `_NOT_CACHED` when the listing itself is
    unavailable (not in the local cache, or no cache at all).
    """
    from dvc_data.hashfile.tree import Tree

    if not out.hash_info or repo.cache.local is None:
        return _NOT_CACHED
    listing = out.get_obj()
    if not isinstance(listing, Tree):
        return _NOT_CACHED
    prefix = out.fs.relparts(abs_path, out.fs_path)
    entry = listing.get_obj(out.cache, prefix)
    return entry.hash_info.value if entry is not None and entry.hash_info else None


# --------------------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------------------


def environment_info(device: str | None = None) -> dict:
    """Describes the Python/software/hardware environment of the current process.

    Args:
        device: The device the run uses; autodetected from torch when None.

    Returns:
        A dict with ``python``, versions of ``torch``, ``transformers``, ``mlflow``, ``dvc`` and
        ``numpy`` (None when not installed), ``platform``, ``cpu_count``, ``device`` (``"cpu"``,
        ``"cuda:<GPU name>"`` or ``"mps"`` when autodetected), ``cuda`` (torch's CUDA version or
        None), and what `xp.record.numerics.describe` says: ``cpu``, ``cpu_capability``,
        ``numerics``, ``gpu``, ``cudnn``, ``env`` (numerics variables), ``torch_config``.
    """
    info: dict[str, Any] = {"python": platform.python_version()}
    for package in _VERSIONED_PACKAGES:
        info[package] = _package_version(package)
    info["platform"] = platform.platform()
    info["cpu_count"] = os.cpu_count()

    torch = _import_torch() if info["torch"] else None
    info["device"] = device or _detect_device(torch)
    from xp.record import numerics

    info.update(numerics.describe(torch))  # cpu, kernels, profile, gpu, numerics variables
    info["cuda"] = info["cuda"] or getattr(getattr(torch, "version", None), "cuda", None)
    return info


def _package_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _import_torch() -> Any:
    try:
        import torch
    except Exception:  # noqa: BLE001 - a broken torch install should not stop provenance capture
        return None
    return torch


def _detect_device(torch: Any) -> str:
    if torch is None:
        return "cpu"
    try:
        if torch.cuda.is_available():
            return f"cuda:{torch.cuda.get_device_name(0)}"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
    except Exception:  # driver problems mean we fall back to the CPU
        logger.debug("device detection failed", exc_info=True)
    return "cpu"


def pip_freeze() -> str:
    """Lists the installed distributions of the running interpreter.

    Returns:
        ``name==version`` lines sorted case-insensitively by name, newline-terminated. When a
        distribution is installed twice on ``sys.path`` the first (the one imported) wins.
        Read once per process and `sys.path` (~1 s): a warm worker's seeds share it.
    """
    return _pip_freeze(tuple(sys.path))


@functools.cache
def _pip_freeze(path: tuple[str, ...]) -> str:
    from importlib import metadata

    seen: dict[str, str] = {}
    for dist in metadata.distributions(path=list(path)):
        name, version = _name_and_version(dist)
        if not name:
            continue
        key = re.sub(r"[-_.]+", "-", name).lower()  # PEP 503: `Foo_Bar` and `foo-bar` are one
        seen.setdefault(key, f"{name}=={version}")
    lines = sorted(seen.values(), key=str.lower)
    return "".join(f"{line}\n" for line in lines)


def _name_and_version(dist: Any) -> tuple[str | None, str | None]:
    """`dist.metadata["Name"]` and `["Version"]`, read from the metadata's header alone: the
    same fields without parsing the whole file as e-mail (~20x faster over ~200 packages)."""
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    found: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():  # the header ends at the first empty line
            break
        key, sep, value = line.partition(":")
        key = key.lower()
        if sep and not line[0].isspace() and key in ("name", "version"):
            found.setdefault(key, value.strip())
    return found.get("name"), found.get("version")
