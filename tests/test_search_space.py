from pathlib import Path

import pytest

from xp.config import load_config
from xp.search.space import SearchSpaceError, as_override, grid_points, load_space

PROJECTS = Path(__file__).resolve().parents[1] / "projects"


def test_every_shipped_space_loads_with_a_why_comment_per_knob():
    for project in ("digits", "vader", "vader_valence"):
        path = PROJECTS / project / "search.yaml"
        space = load_space(path, project, [], PROJECTS)
        assert {"optim.lr", "optim.layer_decay", "train.freeze_layers"} <= set(space)
        lines = path.read_text().splitlines()
        assert (
            lines[0] == f"# xp search {project} --space {path.relative_to(PROJECTS.parent)} "
            "--trials 20 --method tpe"
        )
        for i, line in enumerate(lines):
            if line and not line.startswith("#"):
                assert lines[i - 1].startswith("#"), line  # the comment right above says why
    digits = load_space(PROJECTS / "digits/search.yaml", "digits", [], PROJECTS)
    lr = digits["optim.lr"]
    assert (lr.low, lr.high, lr.log) == (1e-4, 3e-2, True)
    assert digits["train.freeze_layers"].choices == (0, 1, 2, 3)


@pytest.mark.parametrize("value", [3e-4, 0.7, 2, None, True, [0.8, 0.99], "cosine"])
def test_a_sampled_value_becomes_an_override_the_config_reads_back(value):
    key = {
        float: "optim.lr",
        int: "train.freeze_layers",
        type(None): "model.dropout",
        bool: "train.freeze_embeddings",
        list: "optim.betas",
        str: "schedule.decay",
    }[type(value)]
    if value == 0.7:
        key = "optim.layer_decay"
    cfg = load_config("digits", [as_override(key, value)], PROJECTS).model_dump()
    section, name = key.split(".")
    got = cfg[section][name]
    assert (list(got) if isinstance(got, tuple) else got) == value


BAD = {
    "": "the search space is empty",
    "optim.lrr: {uniform: [0.1, 0.2]}": "optim.lrr: unknown config key 'optim.lrr'",
    "optim.lr: {uniform: [0.5, 2.0]}": "optim.lr: optim.lr=2.0",
    "optim.lr: {uniform: [0.2, 0.1]}": "uniform [0.2, 0.1] is empty: low must be < high",
    "optim.lr: {log_uniform: [0, 0.1]}": "log_uniform needs low > 0",
    "optim.lr: {normal: [0, 0.1]}": "unknown kind 'normal'",
    "optim.lr: [0.1, 0.2]": "give one of log_uniform, uniform, int, choice",
    "train.epochs: {int: [1.5, 4]}": "int needs integer ends",
    "train.freeze_layers: {choice: []}": "choice needs a non-empty list",
    "train.freeze_layers: {choice: [1, 1]}": "a value is listed twice",
    "seed.init: {int: [1, 9]}": "seeds are not searched",
    "train.threads: {int: [1, 2]}": "train.threads is an execution setting",
    "optim.lr: {uniform: [0.1, 0.2]}\noptim.lr: {uniform: [0.1, 0.3]}": "is given twice",
    "[1, 2]": "a search space is a mapping",
}


@pytest.mark.parametrize("text", BAD)
def test_a_bad_space_is_one_line_naming_the_knob(tmp_path, text):
    path = tmp_path / "search.yaml"
    path.write_text(text + "\n")
    with pytest.raises(SearchSpaceError) as e:
        load_space(path, "digits", [], PROJECTS)
    assert BAD[text] in str(e.value) and "\n" not in str(e.value)


def test_a_knob_fixed_on_the_command_line_or_a_missing_file_is_refused(tmp_path):
    with pytest.raises(SearchSpaceError, match="optim.lr is searched and also fixed"):
        load_space(PROJECTS / "digits/search.yaml", "digits", ["optim.lr=0.01"], PROJECTS)
    with pytest.raises(SearchSpaceError, match="no search space at"):
        load_space(tmp_path / "nope.yaml", "digits", [], PROJECTS)


def test_grid_points_only_for_finite_spaces(tmp_path):
    path = tmp_path / "search.yaml"
    path.write_text("train.freeze_layers: {choice: [0, 3]}\ntrain.epochs: {int: [2, 4]}\n")
    grid = grid_points(load_space(path, "digits", [], PROJECTS))
    assert grid == {"train.freeze_layers": [0, 3], "train.epochs": [2, 3, 4]}
    assert grid_points(load_space(PROJECTS / "digits/search.yaml", "digits", [], PROJECTS)) is None


def test_the_optimizer_l1_and_augmentation_are_searchable(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(
        "# which optimizer\noptim.name: {choice: [adamw, adam, sgd, rmsprop]}\n"
        "# an L1 penalty, from none to strong\noptim.l1: {uniform: [0.0, 0.001]}\n"
        "# augmentation, off to strong\naugment.shift: {choice: [0.0, 0.125]}\n"
        "# rotations, in degrees\naugment.rotate: {uniform: [0.0, 15.0]}\n"
    )
    loaded = load_space(space, "digits", [], PROJECTS)
    assert loaded["optim.name"].choices == ("adamw", "adam", "sgd", "rmsprop")
    for name in loaded["optim.name"].choices:  # each choice is a config the trainer accepts
        config = load_config("digits", [as_override("optim.name", name)], PROJECTS)
        assert config.optim.name == name
    for shift in loaded["augment.shift"].choices:
        assert (
            load_config("digits", [as_override("augment.shift", shift)], PROJECTS).augment.shift
            == shift
        )
