"""Reading a project: YAML + `key=value` overrides -> a validated config; its hash, its params.

A project lives in `projects/<name>/config.yaml`: xp's trainer keys (`Config`), or a command
template with its params (`ScriptConfig`). Overrides use dotted keys (`optim.lr=3e-4`; a script
project's params by name, `lr=3e-5`); `seed=2` sets the master seed. Validation is strict (unknown
keys are errors) and happens before any run is created, so a typo never costs a training run.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from xp import XpError
from xp.config.base import ConfigError, MonitorConfig
from xp.config.script import Scalar, ScriptConfig, render, script_path
from xp.config.trainer import Config

ProjectConfig = Config | ScriptConfig


def known_projects(projects_dir: Path) -> list[str]:
    """Names of the projects under `projects_dir` (folders holding a config.yaml)."""
    if not projects_dir.is_dir():
        return []
    return sorted(p.parent.name for p in projects_dir.glob("*/config.yaml"))


PROJECT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_project_name(project: str, projects_dir: Path) -> None:
    """A project is named, not pointed at: `digits`, never `../projects/digits`.

    Raises:
        ConfigError: the name is a path or holds characters a folder name under projects/ has not.
    """
    if PROJECT_NAME.fullmatch(project):
        return
    known = ", ".join(known_projects(projects_dir)) or "none"
    if "/" in project or "\\" in project or project.startswith("."):
        tail = Path(project.rstrip("/\\")).name
        hint = f" (did you mean {tail!r}?)" if tail in known_projects(projects_dir) else ""
        raise ConfigError(
            f"project {project!r} is a path; give the name of a folder under {projects_dir}"
            f"{hint}; known projects: {known}"
        )
    raise ConfigError(f"project {project!r} is not a project name; known projects: {known}")


def _canonical_key(key: str) -> str:
    return "seed.master" if key == "seed" else key


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Parse `key=value` strings; values are read as YAML scalars (`3e-4`, `true`, `[1, 2]`).

    Raises:
        ConfigError: an item without `=`, with an empty key, or a key given twice.
    """
    out: dict[str, Any] = {}
    given: dict[str, str] = {}  # canonical key -> the item that set it
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not key=value (e.g. optim.lr=3e-4)")
        canon = _canonical_key(key)
        if canon in given:  # last-one-wins would silently drop what the user typed first
            raise ConfigError(
                f"{key} is given twice ({given[canon]} and {item}); keep the one you mean"
            )
        given[canon] = item
        try:
            value = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError:
            value = raw
        out[key] = value
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key twice in one mapping (PyYAML keeps the last silently)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            first = seen[key]

            def shown(n: yaml.Node) -> str:  # a scalar's text; a mapping or list by its line
                line = f"line {n.start_mark.line + 1}"
                return f"{line}: {n.value!r}" if isinstance(n, yaml.ScalarNode) else line

            raise ConfigError(
                f"config key {key!r} is given twice ({shown(first)}, {shown(value_node)}); "
                "keep the one you mean"
            )
        seen[key] = value_node
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    if parts == ["seed"]:  # `seed=2` sets the master seed and keeps per-purpose seeds
        parts = ["seed", "master"]
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if part == "seed" and not isinstance(child, dict):
            child = {"master": child} if child is not None else {}
        elif not isinstance(child, dict):
            child = {}
        node[part] = child
        node = child
    node[parts[-1]] = value


def read_yaml(path: Path) -> Any:
    """A YAML file of ours (safe loader; a key given twice in a mapping is an error).

    Raises:
        ConfigError: invalid YAML, or a key given twice.
    """
    try:
        return yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 (safe)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None


def load_config(
    project: str, overrides: list[str] | dict[str, Any], projects_dir: Path
) -> ProjectConfig:
    """Read `projects/<project>/config.yaml`, apply overrides and validate.

    Args:
        project: project name (a folder under `projects_dir`).
        overrides: `key=value` strings or an already parsed mapping.
        projects_dir: the folder holding the projects.

    Returns:
        The validated config.

    Raises:
        ConfigError: unknown project, unreadable YAML, or a key/value that does not validate.
    """
    check_project_name(project, projects_dir)
    path = projects_dir / project / "config.yaml"
    if not path.is_file():
        known = known_projects(projects_dir)
        raise ConfigError(
            f"unknown project {project!r}; known projects: {', '.join(known) or 'none'} "
            f"(in {projects_dir})"
        )
    raw = read_yaml(path) or {}
    parsed = parse_overrides(overrides) if isinstance(overrides, list) else dict(overrides)
    raw.setdefault("project", project)
    if isinstance(raw, dict) and "command" in raw:
        parsed = _script_overrides(raw, parsed, project)
    for key, value in parsed.items():
        _set_dotted(raw, key, value)
    config = validate(raw)
    if isinstance(config, ScriptConfig):
        check_script(config, projects_dir.parent)
    return config


SCRIPT_SECTIONS = ("seed", "train", "eval", "data", "params", "task", "command")


def _script_overrides(raw: dict[str, Any], parsed: dict[str, Any], project: str) -> dict[str, Any]:
    """A script project's overrides as dotted keys: a param by its name (`lr=3e-5` ->
    `params.lr`), of the type the project declares it with.

    Raises:
        ConfigError: a param the project does not declare, or a value of another type.
    """
    declared = raw.get("params") or {}
    out = {}
    for key, value in parsed.items():
        name = key.removeprefix("params.")
        if key.startswith("params.") or key.split(".")[0] not in SCRIPT_SECTIONS:
            if name not in declared:
                raise ConfigError(
                    f"unknown param {name!r} for project {project!r}; its params: "
                    f"{', '.join(declared) or 'none'} (and seed, train.*, eval.metric, data.*)"
                )
            out[f"params.{name}"] = _as_declared(name, value, declared[name])
        else:
            out[key] = value
    return out


def _as_declared(name: str, value: Any, declared: Scalar) -> Scalar:
    """An override's value, of its param's declared type (an int where a float is declared
    becomes a float; anything else of another type is refused)."""
    kinds = ((bool, "true or false"), (int, "an integer"), (float, "a number"), (str, "a string"))
    if isinstance(value, (list, dict)):
        raise ConfigError(f"{name}={value!r}: a param is one value, not a list or mapping")
    if declared is None or value is None:
        return value
    for kind, words in kinds:
        if isinstance(declared, kind):
            if kind is float and not isinstance(value, bool):
                try:  # an int, or what YAML 1.1 leaves a string (`3e-5`)
                    return float(value)
                except ValueError:
                    pass
            if kind is str and not isinstance(value, str):
                return str(value)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ConfigError(f"{name}={value!r}: the project declares {name} as {words}")
            return value
    return value


def check_script(config: ScriptConfig, root: Path) -> None:
    """What can be known of a script project's command before it runs: its script exists.

    Raises:
        ConfigError: a `python <file>` command whose file is not there.
    """
    argv = render(config, {}, sys.executable)
    script = script_path(argv)
    if script and not (root / script).is_file():
        raise ConfigError(
            f"project {config.project!r}: the command runs {script}, which does not exist "
            f"(paths are relative to {root})"
        )


def validate(raw: dict[str, Any]) -> ProjectConfig:
    """Validate a plain config tree; the first problem becomes one readable line.

    Raises:
        ConfigError: naming the key, the value and what is allowed.
    """
    model = ScriptConfig if isinstance(raw, dict) and "command" in raw else Config
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_first_error(e, model)) from None


def _first_error(e: ValidationError, top: type[BaseModel]) -> str:
    err = e.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        section = _section_model(top, err["loc"][:-1])
        known = ", ".join(section.model_fields) if section else ""
        where = ".".join(str(p) for p in err["loc"][:-1]) or "the top level"
        return f"unknown config key {key!r}; keys allowed in {where}: {known}"
    if err["type"] == "missing":
        return f"config key {key!r} is missing"
    msg = err["msg"].removeprefix("Value error, ")
    if not key:  # a model-level check already names its key and value
        return msg
    return f"{key}={err.get('input')!r}: {msg}"


def _section_model(top: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    model = top
    for part in loc:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


def flatten(config: ProjectConfig) -> dict[str, str]:
    """Every value of the config as `dotted.key -> str`, as logged to MLflow params.

    The master seed is logged as `seed`, per-purpose seeds as `seed.<purpose>` (resolved
    values are logged by the trainer; here they may still be None).
    """
    tree = config.model_dump(mode="json")
    seed = tree.pop("seed")
    flat: dict[str, str] = {"seed": str(seed.pop("master"))}
    for k, v in seed.items():
        if v is not None:
            flat[f"seed.{k}"] = str(v)

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            flat[prefix] = json.dumps(node) if isinstance(node, list) else str(node)

    walk("", tree)
    return flat


# how a run is executed, watched and measured, not what it trains: left out of the hash and the
# differences (`--jobs` divides threads, a GPU replaces the CPU, another test set measures more)
EXECUTION_KEYS = {
    # (more test sets measure a model; they do not change it. The fold a run trains on is, like
    # its seed, a draw of the design that `xp repeat --folds` records, not the configuration)
    "data": ("extra_tests", "resplit", "poolable"),
    "train": ("threads", "device", "checkpoint_every", "numerics"),
    "eval": ("train_sample", "retention", "merge_tolerance"),
    "monitor": tuple(MonitorConfig.model_fields),
}


# keys added after configurations were recorded: left out of the hash at their defaults, so a
# configuration that does not use them keeps its hash
NEUTRAL_DEFAULTS = {"optim": {"name": "adamw", "l1": 0.0, "momentum": None, "nesterov": None,
                              "alpha": None},
                    "model": {"adapter": None},
                    "augment": {"shift": 0.0, "rotate": 0.0, "noise": 0.0, "mask": 0.0,
                                "delete": 0.0}}  # fmt: skip


def config_hash(config: ProjectConfig) -> str:
    """A stable hash of the resolved config without its seeds: equal for all seeds of one config.

    Execution settings (`train.threads`, `train.device`, `train.checkpoint_every`,
    `train.numerics`, `data.extra_tests`, `eval.train_sample`, `eval.retention`,
    `eval.merge_tolerance`, `monitor.*`) are
    left out too: the same configuration run 2 seeds at a time, on a GPU, with portable kernels or
    watched and measured otherwise is still the same configuration.
    """
    tree = config.model_dump(mode="json")
    tree.pop("seed")
    for section, defaults in NEUTRAL_DEFAULTS.items():  # keys added later, at their defaults:
        for key, value in defaults.items():  # a config from before them hashes as it did
            if tree.get(section, {}).get(key, value) == value:
                tree.get(section, {}).pop(key, None)
        if tree.get(section) == {}:  # (a section added later, all at its defaults: `augment`)
            tree.pop(section)
    for section, keys in EXECUTION_KEYS.items():
        for key in keys:
            tree.get(section, {}).pop(key, None)
        if tree.get(section) == {}:  # (a section of execution keys alone: `monitor`)
            tree.pop(section)
    canon = json.dumps(tree, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


def differences(config: ProjectConfig, projects_dir: Path) -> list[str]:
    """What sets this config apart from its project's `config.yaml`, as `key=value` items.

    Seeds and execution settings are left out (as from the config hash). A key is shortened to
    its last part (`optim.layer_decay` -> `layer_decay`) unless two differing keys share it.
    """
    own, base = flatten(config), flatten(load_config(config.project, [], projects_dir))
    skip = {f"{s}.{k}" for s, keys in EXECUTION_KEYS.items() for k in keys} | {"project"}
    keys = [k for k in own if k != "seed" and not k.startswith("seed.") and k not in skip
            and k.rsplit(".", 1)[0] not in skip and own[k] != base.get(k)]  # fmt: skip
    last = [k.rsplit(".", 1)[-1] for k in keys]
    # as a user types it: a list is one word; null, true, false as in YAML
    value = {k: YAML_WORDS.get(own[k], _short(own[k]).replace(", ", ",")) for k in keys}
    return [f"{k if last.count(s) > 1 else s}={value[k]}" for k, s in zip(keys, last, strict=True)]


YAML_WORDS = {"None": "null", "True": "true", "False": "false"}


def _short(value: str) -> str:
    """A float with 4 significant digits (a search's 0.008464252827630286 -> 0.008464)."""
    try:
        number = float(value)
    except ValueError:
        return value
    return f"{number:.4g}" if any(c in value for c in ".e") else value


RUN_NAME_CHARS = 120  # what the MLflow UI's runs table shows without a tooltip, roughly


def run_name(config: ProjectConfig, projects_dir: Path, suffix: str) -> str:
    """MLflow's run name: `<project> <what differs> <suffix>`, e.g. `digits layer_decay=0.7 s3`.

    A long list of differences is cut, saying how many were left out (the params hold them all).
    """
    shown, rest = [], differences(config, projects_dir)
    while rest and len(" ".join([config.project, *shown, rest[0], suffix])) <= RUN_NAME_CHARS:
        shown.append(rest.pop(0))
    if rest:
        shown.append(f"+{len(rest)} more")
    return " ".join([config.project, *shown, suffix])


def to_yaml(config: ProjectConfig) -> str:
    """The resolved config as YAML (what a run records as `config.yaml`)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def split_extra_args(args: list[str]) -> tuple[list[str], dict[str, str]]:
    """Split CLI leftovers into `key=value` overrides and `--key value` options.

    `mlflow run -P optim.lr=3e-4` arrives as `--optim.lr 3e-4`; both forms become overrides.
    """
    overrides, options = [], {}
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("--"):
            key, sep, value = a[2:].partition("=")
            if not sep:
                if i + 1 >= len(args):
                    raise XpError(f"option {a} needs a value")
                value, i = args[i + 1], i + 1
            options[key] = value
        else:
            overrides.append(a)
        i += 1
    return overrides, options
