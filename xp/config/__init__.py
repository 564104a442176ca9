"""Project configs: YAML + `key=value` overrides -> a validated, typed config.

Two kinds of project: xp's own trainer (`Config`: model, optim, schedule, train, eval keys) and a
script of the user's (`ScriptConfig`: a command template, its params and its data). Both have a
task, seeds, data splits, an `eval.metric` and the `train` keys of how a run is executed, so the
verbs take either.
"""

from xp.config.base import (
    CLASSIFICATION_METRICS,
    LOWER_IS_BETTER,
    REGRESSION_METRICS,
    SPLITS,
    ConfigError,
    MonitorConfig,
    SeedConfig,
    higher_is_better,
    metric_key,
    metrics_for,
    split_paths,
)
from xp.config.load import (
    EXECUTION_KEYS,
    YAML_WORDS,
    ProjectConfig,
    check_project_name,
    config_hash,
    differences,
    flatten,
    known_projects,
    load_config,
    parse_overrides,
    read_yaml,
    run_name,
    split_extra_args,
    to_yaml,
    validate,
)
from xp.config.script import ScriptConfig, data_paths, render
from xp.config.trainer import (
    AdapterConfig,
    AugmentConfig,
    Config,
    DataConfig,
    EvalConfig,
    ModelConfig,
    OptimConfig,
    ScheduleConfig,
    TrainConfig,
)

__all__ = [
    "CLASSIFICATION_METRICS", "EXECUTION_KEYS", "LOWER_IS_BETTER", "REGRESSION_METRICS", "SPLITS",
    "YAML_WORDS", "AdapterConfig", "AugmentConfig", "Config", "ConfigError", "DataConfig",
    "EvalConfig", "ModelConfig",
    "MonitorConfig", "OptimConfig", "ProjectConfig", "ScheduleConfig", "ScriptConfig", "SeedConfig",
    "TrainConfig",
    "check_project_name", "config_hash", "data_paths", "differences", "flatten",
    "higher_is_better", "known_projects", "load_config", "metric_key", "metrics_for",
    "parse_overrides", "read_yaml", "render", "run_name", "split_extra_args", "split_paths",
    "to_yaml", "validate",
]  # fmt: skip
