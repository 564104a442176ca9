"""A project's hyperparameter search space (`projects/<p>/search.yaml`), read and checked before
any trial runs, as Optuna distributions.

    optim.lr: {log_uniform: [1.0e-5, 1.0e-2]}   # why this knob and this range
    optim.layer_decay: {uniform: [0.6, 1.0]}
    train.freeze_layers: {choice: [0, 1, 2, 3]}
    train.epochs: {int: [5, 20]}                 # integers, both ends included

Every key must be a config key that changes what is trained (not a seed, not an execution
setting), and every end of a range and every choice must be a value the config accepts: a
misspelled key or an impossible range is one line, as a config error is.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from xp.config import EXECUTION_KEYS, ConfigError, load_config, read_yaml

KINDS = ("log_uniform", "uniform", "int", "choice")


class SearchSpaceError(ConfigError):
    """An empty or malformed search space, or a knob the config does not accept."""


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _distribution(key: str, spec: Any, where: str) -> Any:
    """One knob's Optuna distribution, or SearchSpaceError naming the knob."""
    import optuna.distributions as od

    if not isinstance(spec, dict) or len(spec) != 1:
        raise SearchSpaceError(
            f"{where}: {key}: give one of {', '.join(KINDS)}, e.g. "
            f"{key}: {{uniform: [0.1, 0.5]}}; got {spec!r}"
        )
    ((kind, args),) = spec.items()
    if kind not in KINDS:
        raise SearchSpaceError(
            f"{where}: {key}: unknown kind {kind!r}; use one of {', '.join(KINDS)}"
        )
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise SearchSpaceError(f"{where}: {key}: choice needs a non-empty list of values")
        if len({repr(a) for a in args}) != len(args):
            raise SearchSpaceError(f"{where}: {key}: a value is listed twice in {args}")
        return od.CategoricalDistribution(args)
    if not (isinstance(args, list) and len(args) == 2 and all(map(_number, args))):
        raise SearchSpaceError(
            f"{where}: {key}: {kind} needs [low, high], two numbers; got {args!r}"
        )
    low, high = args
    if not low < high:
        raise SearchSpaceError(
            f"{where}: {key}: {kind} [{low}, {high}] is empty: low must be < high"
        )
    if kind == "int":
        if not all(isinstance(a, int) for a in args):
            raise SearchSpaceError(f"{where}: {key}: int needs integer ends; got [{low}, {high}]")
        return od.IntDistribution(low, high)
    if kind == "log_uniform" and low <= 0:
        raise SearchSpaceError(f"{where}: {key}: log_uniform needs low > 0; got [{low}, {high}]")
    return od.FloatDistribution(float(low), float(high), log=kind == "log_uniform")


def values_to_check(dist: Any) -> list[Any]:
    """The values of a knob the config must accept: its ends, or every choice."""
    if hasattr(dist, "choices"):
        return list(dist.choices)
    return [dist.low, dist.high]


def as_override(key: str, value: Any) -> str:
    """A sampled value as the `key=value` override `xp train` takes (YAML: lists, null)."""
    import json

    if value is None:
        return f"{key}=null"
    if isinstance(value, bool):
        return f"{key}={'true' if value else 'false'}"
    if isinstance(value, list | tuple):
        return f"{key}={json.dumps(list(value))}"
    return f"{key}={value!r}" if isinstance(value, float) else f"{key}={value}"


def load_space(path: Path, project: str, overrides: list[str], projects_dir: Path) -> dict:
    """Read and check a search space: {key: optuna distribution}, in the file's order.

    Args:
        path: the search.yaml.
        project: the project whose config the knobs must fit.
        overrides: the command line's overrides (the knobs apply on top of them; a knob may not
            also be fixed by an override).
        projects_dir: the folder holding the projects.

    Raises:
        SearchSpaceError: a missing, empty or malformed file; a knob that is a seed, an execution
            setting, fixed by an override, not a config key, or with a value the config refuses.
    """
    if not path.is_file():
        raise SearchSpaceError(
            f"no search space at {path}; write one (see projects/digits/search.yaml)"
        )
    where = str(path)
    try:
        raw = read_yaml(path)
    except ConfigError as e:
        raise SearchSpaceError(f"{where}: {e}") from None
    if not raw:
        raise SearchSpaceError(f"{where}: the search space is empty; give at least one knob")
    if not isinstance(raw, dict):
        raise SearchSpaceError(f"{where}: a search space is a mapping of config keys to ranges")
    fixed = {o.split("=", 1)[0].strip() for o in overrides}
    execution = {f"{s}.{k}" for s, keys in EXECUTION_KEYS.items() for k in keys}
    space: dict[str, Any] = {}
    for key, spec in raw.items():
        key = str(key)
        if key == "seed" or key.startswith("seed."):
            raise SearchSpaceError(f"{where}: {key}: seeds are not searched (--seeds-per-trial and "
                                   "--confirm-seeds decide them)")  # fmt: skip
        if key in execution:
            raise SearchSpaceError(f"{where}: {key} is an execution setting, not a hyperparameter")
        if key in fixed:
            raise SearchSpaceError(f"{where}: {key} is searched and also fixed on the "
                                   "command line; drop one")  # fmt: skip
        dist = _distribution(key, spec, where)
        for value in values_to_check(dist):
            try:
                load_config(project, [*overrides, as_override(key, value)], projects_dir)
            except ConfigError as e:
                raise SearchSpaceError(f"{where}: {key}: {e}") from None
        space[key] = dist
    return space


def grid_points(space: dict) -> dict[str, list[Any]] | None:
    """The grid of a space whose every knob is finite (choices, int ranges), else None."""
    grid: dict[str, list[Any]] = {}
    for key, dist in space.items():
        if hasattr(dist, "choices"):
            grid[key] = list(dist.choices)
        elif type(dist).__name__ == "IntDistribution":
            grid[key] = list(range(dist.low, dist.high + 1, dist.step))
        else:
            return None
    return grid
