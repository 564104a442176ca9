"""The config of a script project: a training script of the user's own, run by a command template.

    command: python projects/vader_trainer/train.py --seed {seed} --data_seed {seed.data_order}
             --learning_rate {lr} --output_dir {run_dir} [--resume_from_checkpoint {resume}]
    params: {lr: 5.0e-5, epochs: 3}      # the knobs: overridable (lr=3e-5), searchable
    data: {train: ..., validation: ..., test: ...}
    task: classification        # or regression, or generation (a causal LM: TRL's SFTTrainer)

Placeholders: every param by its name; `{seed}` (the master seed) and the seeds derived from it
(`{seed.init}`, `{seed.data_order}`, `{seed.dropout}`); `{run_dir}` (the run's scratch folder);
`{resume}` (the checkpoint to resume from, empty when there is none); `{data.<name>}` (a data
file's path); `{threads}` and `{device}` (what the executor gives the seed; empty when unset);
`{metric}` and `{task}`. A number may carry a format spec (`{lr:.1e}`). Words in square brackets
are dropped whole when a placeholder inside them is empty: `[--resume_from_checkpoint {resume}]`.
A leading `python` or `python3` is the interpreter xp runs in.
"""

from __future__ import annotations

import re
import shlex
import string
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from xp.config.base import DEFAULT_METRIC, SPLITS, SeedConfig, _Section, metrics_for

# a param is a word a command line can carry: a number, a bool, a string, or null
Scalar = bool | int | float | str | None
PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SEED_PLACEHOLDERS = (
    "seed",
    "seed.init",
    "seed.data_order",
    "seed.dropout",
    "seed.split",
    "seed.augment",
)
RUN_PLACEHOLDERS = ("run_dir", "resume", "threads", "device", "metric", "task", "project")
RESERVED = frozenset({"seed", "data", "params", *RUN_PLACEHOLDERS})
OPTIONAL = re.compile(r"\[([^\[\]]*)\]")  # `[--flag {placeholder}]`
INTERPRETERS = ("python", "python3")


class ScriptData(_Section):
    """The data a script reads: the three splits, and any other file or folder it depends on
    (`backbone: models/base`), each recorded with its DVC md5."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    train: str
    validation: str
    test: str

    @model_validator(mode="after")
    def _extra_are_paths(self) -> ScriptData:
        for name, value in (self.model_extra or {}).items():
            if not PARAM_NAME.fullmatch(name) or not isinstance(value, str):
                raise ValueError(f"data.{name}={value!r}: a data entry is a name and a path")
        return self


class ScriptEval(_Section):
    metric: str | None = None  # the metric a repeat judges (`test/<metric>`); default by task


class ScriptRun(_Section):
    """How xp runs the script; none of it is part of the configuration's hash but
    `deterministic`."""

    deterministic: bool = True  # handed to the script (XP_DETERMINISTIC); the integrations apply it
    numerics: Literal["native", "portable"] = "native"
    device: str = "auto"
    threads: int | None = Field(None, ge=1)
    checkpoint_every: int | None = Field(None, ge=1)  # handed on (XP_CHECKPOINT_EVERY)


class ScriptConfig(_Section):
    """A project whose training is a command of the user's (HF Trainer, Lightning, a plain loop)."""

    project: str
    task: Literal["classification", "regression", "generation"]
    command: str
    params: dict[str, Scalar] = {}
    seed: SeedConfig = SeedConfig()
    data: ScriptData
    eval: ScriptEval = ScriptEval()
    train: ScriptRun = ScriptRun()

    @field_validator("seed", mode="before")
    @classmethod
    def _seed_int_is_master(cls, v: Any) -> Any:
        return {"master": v} if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("params")
    @classmethod
    def _param_names(cls, v: dict[str, Scalar]) -> dict[str, Scalar]:
        for name in v:
            if not PARAM_NAME.fullmatch(name):
                raise ValueError(f"param {name!r}: a param name is a word (letters, digits, _)")
            if name in RESERVED:
                raise ValueError(f"param {name!r}: the name is xp's own placeholder; rename it")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> ScriptConfig:
        allowed = metrics_for(self.task)
        if self.eval.metric is None:
            self.eval.metric = DEFAULT_METRIC[self.task]
        elif self.eval.metric not in allowed:
            raise ValueError(
                f"eval.metric={self.eval.metric!r} is not a {self.task} metric; "
                f"use one of {', '.join(allowed)}"
            )
        if not self.command.strip():
            raise ValueError("command is empty: give the command line that trains one seed")
        known = placeholders(self)
        for name, _ in template_fields(self.command):
            if name not in known:
                raise ValueError(
                    f"command: unknown placeholder {{{name}}}; known: "
                    + ", ".join(f"{{{k}}}" for k in known)
                )
        return self


def template_fields(command: str) -> list[tuple[str, str]]:
    """(placeholder, format spec) of every `{...}` in a command template.

    Raises:
        ValueError: an unbalanced brace or a conversion (`{lr!r}`).
    """
    out = []
    try:
        parsed = list(string.Formatter().parse(command))
    except ValueError as e:
        raise ValueError(f"command: {e} (a literal brace is written {{{{ or }}}})") from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if conversion:
            raise ValueError(f"command: {{{name}!{conversion}}}: conversions are not supported")
        if not name:
            raise ValueError("command: an empty placeholder {}; name what goes there")
        out.append((name, spec or ""))
    return out


def placeholders(config: ScriptConfig) -> list[str]:
    """Every name the command template may use."""
    data = [f"data.{name}" for name in (*SPLITS, *(config.data.model_extra or {}))]
    return [*SEED_PLACEHOLDERS, *config.params, *RUN_PLACEHOLDERS, *data]


def data_paths(config: ScriptConfig) -> dict[str, str]:
    """Name -> path of every data entry (the splits first)."""
    return {**{name: getattr(config.data, name) for name in SPLITS},
            **dict(config.data.model_extra or {})}  # fmt: skip


def render(config: ScriptConfig, values: dict[str, Any], python: str) -> list[str]:
    """The command line of one run: placeholders filled, optional groups kept or dropped, split
    as a shell would (no shell runs it).

    Args:
        config: the script project.
        values: run-time placeholders (`seed.data_order`, `run_dir`, `resume`, ...); params and
            data paths come from the config.
        python: the interpreter a leading `python`/`python3` becomes.
    """
    filled = {**config.params, **values, **{f"data.{k}": v for k, v in data_paths(config).items()},
              "metric": config.eval.metric, "task": config.task,
              "project": config.project}  # fmt: skip

    # the optional groups first (dropped when a placeholder inside is empty), then the rest; a
    # value is quoted for the split, so that a path with spaces stays one word
    pieces, last = [], 0
    for match in OPTIONAL.finditer(config.command):
        pieces.append(_fill(config.command[last : match.start()], filled))
        if all(filled.get(name) not in (None, "") for name, _ in template_fields(match.group(1))):
            pieces.append(_fill(match.group(1), filled))
        last = match.end()
    pieces.append(_fill(config.command[last:], filled))
    argv = shlex.split(" ".join(pieces))
    if argv and argv[0] in INTERPRETERS:
        argv[0] = python
    return argv


def _fill(text: str, filled: dict[str, Any]) -> str:
    out = []
    for literal, name, spec, _ in string.Formatter().parse(text):
        out.append(literal)
        if name is not None:
            value = filled.get(name)
            word = "" if value is None else _word(value, spec or "")
            out.append(shlex.quote(word) if word and not _safe(word) else word)
    return "".join(out)


def _safe(word: str) -> bool:
    return re.fullmatch(r"[\w@%+=:,./-]+", word) is not None


def _word(value: Any, spec: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return format(value, spec) if spec else str(value)


def script_path(argv: list[str]) -> str | None:
    """The script a `python path/to/train.py ...` command runs (None for `python -m ...` and for
    a command that is not Python)."""
    if len(argv) >= 2 and (argv[0].rsplit("/", 1)[-1].startswith("python")) and argv[1] != "-m":
        return argv[1] if argv[1].endswith(".py") else None
    return None
