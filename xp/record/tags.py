"""The run record: provenance (git, data, environment) -> RUN_SCHEMA tags, inputs and artifacts.

Pure mapping from the plain dicts of `xp.record.provenance` to the names of
`shared/RUN_SCHEMA.md`, plus one function that writes them through a tracker. Everything is
gathered before the run starts, so a missing data file stops the job before a run exists.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from dataclasses import dataclass
from typing import Any

from xp.config import (
    ProjectConfig,
    ScriptConfig,
    config_hash,
    data_paths,
    flatten,
    run_name,
    split_paths,
    to_yaml,
)
from xp.record import numerics
from xp.record.workspace import Workspace

# (the retention set is evaluated, never trained on: a test of the pre-trained model's own task)
CONTEXTS = {"train": "train", "validation": "validation", "test": "test", "retention": "test"}


@dataclass
class Provenance:
    """Everything recorded about where a run came from."""

    git: dict[str, Any]
    data: dict[str, dict[str, Any]]
    env: dict[str, Any]
    requirements: str


def data_inputs(config: ProjectConfig, model_source: tuple[str, str]) -> dict[str, str]:
    """Name -> path of every data file or folder a run reads (splits, and a local checkpoint; a
    script project's every `data:` entry)."""
    if isinstance(config, ScriptConfig):
        return data_paths(config)
    paths = dict(split_paths(config.data))  # (extra test sets as `test:<name>`)
    if config.eval.retention:  # the pre-trained model's own task (forgetting)
        paths["retention"] = config.eval.retention
    kind, location = model_source
    if kind == "path":
        paths["backbone"] = config.model.name
    elif kind == "package" and config.model.adapter is not None:  # an adapter's base: versioned
        paths["backbone"] = location
    return paths


def gather(
    config: ProjectConfig,
    workspace: Workspace,
    model_source: tuple[str, str],
    device: str | None = None,
) -> Provenance:
    """Read git, DVC and environment state (raises DataMissingError for a missing input)."""
    from xp.record import provenance

    data = provenance.data_versions(data_inputs(config, model_source), workspace.root)
    return Provenance(
        git=provenance.git_info(workspace.root),
        data=data,
        env=provenance.environment_info(device),
        requirements=provenance.pip_freeze(),
    )


def command_for(project: str, overrides: list[str]) -> str:
    """The `xp train` command line that re-runs a run."""
    return shlex.join(["xp", "train", project, *overrides])


def tags_for(
    config: ProjectConfig, prov: Provenance, deterministic: bool, command: str
) -> dict[str, str]:
    """The RUN_SCHEMA tags of a training run (outcome and group are set elsewhere)."""
    git = prov.git
    tags: dict[str, str] = {
        "xp.kind": "train",
        "xp.project": config.project,
        "xp.config_hash": config_hash(config),
        "xp.git.commit": git.get("commit") or "none",
        "xp.git.branch": git.get("branch") or "",
        "xp.git.dirty": _bool(git.get("dirty")),
        "xp.command": command,
        "xp.env.deterministic": _bool(deterministic),
    }
    if git.get("remote"):
        tags["xp.git.remote"] = git["remote"]
    if git.get("dirty"):  # same commit, other uncommitted code: not the same run
        tags["xp.git.diff_md5"] = hashlib.md5(git.get("diff", "").encode()).hexdigest()
    if git.get("commit"):
        tags["mlflow.source.git.commit"] = git["commit"]
    for name, version in prov.data.items():
        tags[f"xp.data.{name}.path"] = version["path"]
        tags[f"xp.data.{name}.md5"] = version["md5"]
        tags[f"xp.data.{name}.dvc_status"] = version["dvc_status"]
    for key in ("python", "torch", "transformers", "mlflow", "device", "cpu", "cpu_capability",
                "numerics"):  # fmt: skip
        tags[f"xp.env.{key}"] = str(prov.env.get(key) or "")
    tags["xp.env.threads"] = str(prov.env.get("threads") or "")
    tags["xp.env.numerics_env"] = numerics.env_summary(prov.env.get("env") or {})
    for key in ("gpu", "cuda", "cudnn"):  # only where there is a GPU
        if prov.env.get("gpu") and prov.env.get(key):
            tags[f"xp.env.{key}"] = str(prov.env[key])
    return tags


def training_tags(config: ProjectConfig, prov: Provenance, workspace: Workspace,
                  overrides: list[str], group: str | None) -> dict[str, str]:  # fmt: skip
    """The tags a seed's training run starts with, whoever trains it: the RUN_SCHEMA tags, its
    readable name, a search trial's `xp.study`... (`XP_RUN_TAGS`), and its repeat's id."""
    command = command_for(config.project, overrides)
    tags = tags_for(config, prov, config.train.deterministic, command)
    fold = getattr(config.data, "resplit", None)  # (a fold's run: `digits f2 s3`)
    suffix = f"f{fold.index} s{config.seed.master}" if fold else f"s{config.seed.master}"
    tags["mlflow.runName"] = run_name(config, workspace.projects, suffix)
    tags.update(json.loads(os.environ.get("XP_RUN_TAGS") or "{}"))
    if group:
        tags.update({"xp.group": group, "mlflow.parentRunId": group})  # nested in the MLflow UI
    return tags


def params_for(config: ProjectConfig, seeds: dict[str, int]) -> dict[str, str]:
    """Flattened config plus the resolved per-purpose seeds (`seed.init`, ...)."""
    params = flatten(config)
    params.update({f"seed.{k}": str(v) for k, v in seeds.items() if k != "split"})
    if config.seed.split is not None or getattr(config.data, "resplit", None) is not None:
        params["seed.split"] = str(seeds["split"])  # (a fold's rows are drawn from it)
    return params


def write(tracker: Any, config: ProjectConfig, seeds: dict[str, int], prov: Provenance) -> None:
    """Log params, the resolved config, provenance artifacts and dataset inputs."""
    tracker.log_params(params_for(config, seeds))
    tracker.log_text(to_yaml(config), "config.yaml")
    tracker.log_text(prov.requirements, "provenance/requirements.txt")
    tracker.log_text(json.dumps(prov.env, indent=2) + "\n", "provenance/environment.json")
    if prov.git.get("dirty"):
        tracker.log_text(prov.git.get("diff", ""), "provenance/git.diff")
    if prov.git.get("skipped_untracked"):
        skipped = json.dumps(prov.git["skipped_untracked"], indent=2) + "\n"
        tracker.log_text(skipped, "provenance/untracked_skipped.json")
    for name, version in prov.data.items():
        context = CONTEXTS.get(name, "train")  # a backbone checkpoint is read for training
        tracker.log_input(name, version["path"], version["md5"], context)
    tracker.set_tags({"xp.recorded": "true"})  # the record is whole (a resume checks this)


def _bool(value: Any) -> str:
    return "true" if value else "false"


def skipped_summary(git: dict[str, Any]) -> str | None:
    """One line on the untracked files left out of the recorded diff, or None if there are none."""
    skipped = git.get("skipped_untracked") or []
    if not skipped:
        return None
    files = sum(e.get("files", 1) for e in skipped)
    size = sum(e.get("bytes") or 0 for e in skipped)
    envs = [e["path"] for e in skipped if e["reason"] == "environment"]
    where = f" (environments: {', '.join(envs)})" if envs else ""
    return (
        f"{files} untracked file(s), {size / 2**20:.1f} MiB in all, left out of the recorded diff"
        f"{where}; listed in provenance/untracked_skipped.json (add them to .gitignore, or "
        "commit the ones that are code)"
    )
