"""Ranking with uncertainty, on constructed groups with known answers."""

import io
import json
from types import SimpleNamespace

import pytest
from scipy import stats as sps

from xp.compare import CompareError, rank_groups, render

MD5 = "a" * 32


def _runs(config, values, lr, outcome="ok", md5=MD5, metric="test/f1"):
    return [
        SimpleNamespace(
            info=SimpleNamespace(run_id=f"{config}-{i}"),
            data=SimpleNamespace(
                tags={"xp.config_hash": config, "xp.outcome": outcome, "xp.data.test.md5": md5},
                params={"optim.lr": lr, "train.epochs": "3", "seed": str(i), "seed.init": str(i)},
                metrics={metric: v},
            ),
        )
        for i, v in enumerate(values)
    ]


A = [0.90, 0.91, 0.92, 0.90, 0.91]
B = [0.905, 0.91, 0.915, 0.90, 0.92]
C = [0.80, 0.81, 0.79, 0.80, 0.82]


def test_ranking_ties_and_holm_against_scipy():
    runs = _runs("A", A, "1e-3") + _runs("B", B, "3e-4") + _runs("C", C, "1e-2")
    result = rank_groups(runs, "test/f1")
    by = {g["config_hash"]: g for g in result["groups"]}
    top = max(("A", "B"), key=lambda k: by[k]["mean"])
    other = "A" if top == "B" else "B"
    assert by[top]["rank"] == 1 and by[other]["rank"] == 1 and by[other]["tied_with_top"]
    assert by["C"]["rank"] == 3 and not by["C"]["tied_with_top"]
    # Holm with two comparisons against the top, by hand from scipy's Welch p-values
    vals = {"A": A, "B": B, "C": C}
    p_other = sps.ttest_ind(vals[top], vals[other], equal_var=False, alternative="greater").pvalue
    p_c = sps.ttest_ind(vals[top], C, equal_var=False, alternative="greater").pvalue
    small, large = sorted([p_other, p_c])
    holm = {small: min(1, 2 * small), large: min(1, max(2 * small, large))}
    assert by["C"]["p_value_vs_top"] == pytest.approx(holm[p_c])
    assert by[other]["p_value_vs_top"] == pytest.approx(holm[p_other])
    assert by["C"]["prob_better_than_top"] == 0.0
    assert by[top]["ci95_low"] == pytest.approx(
        sps.t.interval(0.95, 4, loc=sum(vals[top]) / 5, scale=sps.sem(vals[top]))[0]
    )
    assert [g["config_hash"] for g in result["groups"]][-1] == "C"


def test_what_differs_is_shown_not_the_whole_config():
    runs = _runs("A", A, "1e-3") + _runs("C", C, "1e-2")
    by = {g["config_hash"]: g for g in rank_groups(runs, "test/f1")["groups"]}
    assert by["A"]["params"] == {"optim.lr": "1e-3"} and by["C"]["params"] == {"optim.lr": "1e-2"}


def test_single_runs_are_listed_not_ranked_and_failed_runs_counted():
    runs = _runs("A", A, "1e-3") + _runs("S", [0.99], "5e-3")
    runs += _runs("A", [0.1, 0.2], "1e-3", outcome="failed")
    result = rank_groups(runs, "test/f1")
    by = {g["config_hash"]: g for g in result["groups"]}
    assert by["S"]["no_uncertainty"] and by["S"]["rank"] is None
    assert by["A"]["rank"] == 1 and by["A"]["n"] == 5 and by["A"]["failed"] == 2
    assert result["n_failed"] == 2
    assert any("one run" in w for w in result["warnings"])


def test_groups_on_different_test_data_are_split_and_warned():
    runs = _runs("A", A, "1e-3") + _runs("C", C, "1e-2", md5="b" * 32)
    result = rank_groups(runs, "test/f1")
    assert {g["rank"] for g in result["groups"]} == {1}  # each ranked within its own test set
    assert any("test data differs" in w for w in result["warnings"])


def test_lower_is_better_metrics_rank_the_smallest_first():
    runs = _runs("A", A, "1e-3", metric="test/rmse") + _runs("C", C, "1e-2", metric="test/rmse")
    by = {g["config_hash"]: g for g in rank_groups(runs, "test/rmse")["groups"]}
    assert by["C"]["rank"] == 1 and by["A"]["rank"] == 2


def test_json_output_schema():
    runs = _runs("A", A, "1e-3") + _runs("C", C, "1e-2")
    data = json.loads(render(rank_groups(runs, "test/f1"), "json"))
    fields = {"rank", "config_hash", "n", "mean", "std", "ci95_low", "ci95_high", "p_value_vs_top",
              "tied_with_top", "prob_better_than_top", "params", "failed"}  # fmt: skip
    assert all(fields <= set(g) for g in data["groups"])
    assert render(rank_groups(runs, "test/f1"), "csv").splitlines()[0].startswith("rank,")


def test_nothing_to_compare_is_an_error():
    with pytest.raises(CompareError, match="no successful training run reports test/f1"):
        rank_groups(_runs("A", A, "1e-3", outcome="failed"), "test/f1")


def test_configurations_of_two_projects_differ_by_project_then_by_their_own_keys():
    """A script project's repeat against xp's trainer's (same test data): the cell says which
    project, and within a project only the keys its configurations disagree on."""
    from xp.compare import differing_params

    def runs(config, project, params):
        return [SimpleNamespace(info=SimpleNamespace(run_id=config), data=SimpleNamespace(
            tags={}, params={"project": project, "seed": "1", **params}, metrics={}))]  # fmt: skip

    groups = {
        "a": runs("a", "vader", {"optim.lr": "1e-4", "model.kind": "hf"}),
        "b": runs("b", "vader", {"optim.lr": "3e-4", "model.kind": "hf"}),
        "c": runs("c", "vader_trainer", {"params.lr": "1e-4", "command": "python t.py"}),
    }
    cells = differing_params(groups)
    assert cells["a"] == {"project": "vader", "optim.lr": "1e-4"}
    assert cells["c"] == {"project": "vader_trainer"}
    one = differing_params({k: groups[k] for k in ("a", "b")})
    assert one["b"] == {"optim.lr": "3e-4"}  # one project: no project column


def test_a_group_trained_on_leaking_splits_is_marked():
    leaky = _runs("L", A, "1e-3")
    for r in leaky:
        r.data.tags["xp.audit.leakage"] = "0.02"
    clean = _runs("C", C, "1e-2")
    for r in clean:
        r.data.tags["xp.audit.leakage"] = "0"
    result = rank_groups(leaky + clean, "test/f1")
    assert {g["config_hash"]: g["leakage"] for g in result["groups"]} == {"L": 0.02, "C": 0.0}
    assert ("configuration lr=1e-3: trained on splits where 2.0% of the test inputs are also in "
            "train (data audit): its score is not a test score") in result["warnings"]  # fmt: skip
    assert not any("configuration lr=1e-2" in w for w in result["warnings"])
    assert rank_groups(_runs("U", A, "1e-3"), "test/f1")["groups"][0]["leakage"] is None


def test_groups_are_named_by_what_differs_and_no_number_is_cut_in_100_columns(monkeypatch):
    """A 100-column terminal: every interval, p-value and name whole; --wide has every column."""
    from rich.console import Console

    from xp.cli import terminal
    from xp.compare import table_rows

    long = _runs("A", A, "1e-3") + _runs("B", B, "3e-4") + _runs("C", C, "1e-2")
    for r in long:  # the names runs carry: project, what differs from config.yaml, the seed
        name = f"digits optim.layer_decay=0.7 lr={r.data.params['optim.lr']} weight_decay=0.05"
        r.info.run_name = f"{name} s{r.data.params['seed']}"
    result = rank_groups(long, "test/f1")
    assert {g["label"] for g in result["groups"]} == {
        f"digits optim.layer_decay=0.7 lr={lr} weight_decay=0.05" for lr in ("1e-3", "3e-4", "1e-2")
    }
    for wide in (False, True):
        drawn = io.StringIO()
        monkeypatch.setattr(terminal, "out", Console(width=100, file=drawn))
        rows = table_rows(result, wide)
        terminal.print_ranking(result, rows)
        text = drawn.getvalue()
        assert "…" not in text
        numbers = [c for r in rows[1:] for c in r if c and c[0] in "[0123456789"]
        assert all(n in text for n in numbers), [n for n in numbers if n not in text]
        assert (len(rows[0]) > 10) == wide
    assert max(len(line) for line in text.splitlines()) > 100  # wide: drawn whole, not cut


def test_two_configurations_of_one_name_are_told_apart_by_hash():
    a, b = _runs("A" * 16, A, "1e-3"), _runs("B" * 16, C, "1e-3")
    for r in a + b:
        r.info.run_name = f"digits s{r.data.params['seed']}"  # config.yaml changed in between
    names = {g["label"] for g in rank_groups(a + b, "test/f1")["groups"]}
    assert names == {"digits (AAAAAAAA)", "digits (BBBBBBBB)"}


def test_a_made_up_name_or_a_second_test_set_never_passes_for_a_label(monkeypatch):
    from rich.console import Console

    from xp.cli import terminal

    old = _runs("A", A, "1e-3") + _runs("C", C, "1e-2")
    for r in old:  # recorded before xp named its runs: MLflow made a name up
        r.info.run_name = "shivering-dog-401"
    assert {g["label"] for g in rank_groups(old, "test/f1")["groups"]} == {"lr=1e-3", "lr=1e-2"}
    split = _runs("A", A, "1e-3") + _runs("A", C, "1e-3", md5="b" * 32)
    result = rank_groups(split, "test/f1")
    assert {g["label"] for g in result["groups"]} == {"A (test aaaaaaaa)", "A (test bbbbbbbb)"}
    said = io.StringIO()
    monkeypatch.setattr(terminal, "out", Console(width=100, file=io.StringIO()))
    monkeypatch.setattr(terminal, "err", Console(width=100, file=said))
    terminal.print_ranking(result, [["rank"], *[["1"] for _ in result["groups"]]])
    assert "warning: test data differs" in said.getvalue()  # the table fits: warned all the same
