from pathlib import Path

import pytest

from xp.config import (
    ConfigError,
    config_hash,
    flatten,
    higher_is_better,
    load_config,
    parse_overrides,
    run_name,
)

PROJECTS = Path(__file__).resolve().parents[1] / "projects"


def test_every_shipped_project_validates():
    for name in ("digits", "vader", "vader_valence"):
        cfg = load_config(name, [], PROJECTS)
        assert cfg.project == name


def test_shipped_configs_start_with_their_launch_command():
    for path in PROJECTS.glob("*/config.yaml"):
        first = path.read_text().splitlines()[0]
        assert first.startswith(f"# xp train {path.parent.name}"), path


def test_overrides_are_typed_and_applied():
    cfg = load_config("digits", ["optim.lr=3e-4", "train.batch_size=8", "seed=7"], PROJECTS)
    assert cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.train.batch_size == 8
    assert cfg.seed.master == 7


def test_master_seed_override_keeps_per_purpose_seeds():
    cfg = load_config("digits", ["seed.init=5", "seed=9"], PROJECTS)
    assert (cfg.seed.master, cfg.seed.init) == (9, 5)


def test_parse_overrides_rejects_items_without_equals():
    with pytest.raises(ConfigError, match="not key=value"):
        parse_overrides(["optim.lr"])


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optim.lr=-1", r"optim\.lr=-1: .*greater than 0"),
        ("optim.lr=0", r"optim\.lr=0: .*greater than 0"),
        ("train.batch_size=0", r"train\.batch_size=0: .*greater than or equal to 1"),
        ("schedule.warmup=1", r"schedule\.warmup=1: .*less than 1"),
        ("schedule.warmup=-0.1", r"schedule\.warmup=-0\.1: .*greater than or equal to 0"),
        ("eval.patience=0", r"eval\.patience=0: .*greater than or equal to 1"),
        ("train.epochs=lots", r"train\.epochs='lots': .*integer"),
        ("schedule.decay=step", r"schedule\.decay='step': .*'linear', 'cosine' or 'constant'"),
        ("optim.lrr=1e-3", r"unknown config key 'optim\.lrr'; keys allowed in optim: lr, "),
        ("trian.epochs=2", r"unknown config key 'trian'; keys allowed in the top level: "),
        ("eval.metric=mae", r"eval\.metric='mae' is not a classification metric"),
        ("model.num_labels=1", r"classification needs at least 2"),
    ],
)
def test_bad_values_give_one_line_naming_key_value_and_rule(override, expected):
    with pytest.raises(ConfigError, match=expected) as e:
        load_config("digits", [override], PROJECTS)
    assert "\n" not in str(e.value)


def test_unknown_project_lists_known_ones():
    with pytest.raises(
        ConfigError, match="unknown project 'digts'; known projects: digits, digits_lightning, "
    ):
        load_config("digts", [], PROJECTS)


def test_config_hash_ignores_seeds_but_not_hyperparameters():
    base = config_hash(load_config("digits", [], PROJECTS))
    assert config_hash(load_config("digits", ["seed=2", "seed.init=4"], PROJECTS)) == base
    assert config_hash(load_config("digits", ["optim.lr=0.002"], PROJECTS)) != base
    execution = ["train.threads=2", "train.device=cpu", "train.checkpoint_every=5"]
    assert config_hash(load_config("digits", execution, PROJECTS)) == base


def test_run_names_say_what_differs_from_the_project_config():
    def name(overrides: list[str], suffix: str = "s3") -> str:
        return run_name(load_config("digits", overrides, PROJECTS), PROJECTS, suffix)

    assert name(["optim.layer_decay=0.7", "seed=3"]) == "digits layer_decay=0.7 s3"
    # a value equal to the project's, seeds and execution settings are not differences
    assert name(["optim.lr=0.001", "seed.init=9", "train.threads=2", "train.device=cpu"]) == (
        "digits s3"
    )
    assert name(["train.freeze_layers=3", "optim.lr=0.01"], "x5") == (
        "digits lr=0.01 freeze_layers=3 x5"  # in the config file's order
    )
    # two differing keys with the same last part keep their sections
    both = name(["train.batch_size=8", "eval.batch_size=16", "model.dropout=0.3"])
    assert both == "digits dropout=0.3 train.batch_size=8 eval.batch_size=16 s3"
    many = name(
        [
            "optim.betas=[0.8,0.99]",
            "optim.weight_decay=0.05",
            "schedule.warmup=0.2",
            "schedule.decay=cosine",
            "train.epochs=3",
            "train.batch_size=16",
            "train.clip_norm=0.5",
            "eval.every=5",
            "eval.patience=3",
            "model.reinit_layers=1",
            "train.freeze_embeddings=true",
            "train.unfreeze_every=4",
            "eval.min_delta=0.001",
        ]
    )
    assert (
        len(many) <= 120
        and many.startswith("digits reinit_layers=1 weight_decay=0.05 betas=[0.8,0.99] ")
        and many.endswith(" more s3")
    )


def test_flatten_uses_dotted_keys_and_schema_seed_names():
    flat = flatten(load_config("digits", ["seed.init=3"], PROJECTS))
    assert flat["seed"] == "1"
    assert flat["seed.init"] == "3"
    assert flat["optim.lr"] == "0.001"
    assert flat["train.batch_size"] == "32"
    assert flat["model.name"] == "models/digits_pretrained"
    assert flat["project"] == "digits"
    assert all(isinstance(v, str) for v in flat.values())


def test_metric_direction():
    assert higher_is_better("test/f1") and higher_is_better("accuracy")
    assert not higher_is_better("val/loss") and not higher_is_better("test/rmse")
