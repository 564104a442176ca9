"""Every mistake a user can make on the command line: one `error:` line, a non-zero exit, no
traceback, and not one recorded run changed.

The cases run against a store that already holds what a user's store holds (finished training
runs, a repeat, an orphaned run killed by SIGKILL, one whose checkpoint was tampered with), and
the store is compared before and after each case. With `XP_BAD_INPUTS_TABLE=<file>` the test
also writes the table of README's troubleshooting section (each input and the line it gives):

    XP_BAD_INPUTS_TABLE=/tmp/bad_inputs.md .venv/bin/pytest tests/e2e/test_bad_inputs.py
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import mlflow
import pytest
import torch

from tests.conftest import copy_repo, parent_id_in, run
from xp.record import supervise

pytestmark = pytest.mark.e2e

FAST = "train.epochs=2 eval.every=5 eval.patience=null"

# (id, command after `xp`, exit code, what the line must say, environment changes)
CASES: list[tuple[str, str, int, str, dict]] = [
    # -- the project and the command line
    ("unknown project", "train digts", 2, "unknown project 'digts'", {}),
    ("project given as a path", "train ../projects/digits", 2, "is a path", {}),
    ("project given as a relative path", "train projects/digits", 2, "is a path", {}),
    ("project name with a space", "train 'digits '", 2, "is not a project name", {}),
    ("no project", "train", 2, "Missing argument 'project'", {}),
    ("unknown verb", "trian digits", 2, "No such command 'trian'", {}),
    ("override without =", "train digits optim.lr", 2, "is not key=value", {}),
    ("override with an empty key", "train digits =3", 2, "is not key=value", {}),
    ("an option with no value", "train digits --optim.lr", 2, "needs a value", {}),
    # -- config values
    ("negative learning rate", "train digits optim.lr=-1", 2, "optim.lr=-1: Input should be", {}),
    ("zero learning rate", "train digits optim.lr=0", 2, "optim.lr=0: Input should be", {}),
    ("learning rate above 1", "train digits optim.lr=2", 2, "optim.lr=2: Input should be", {}),
    ("learning rate not a number", "train digits optim.lr=abc", 2, "optim.lr='abc'", {}),
    ("a key given twice", "train digits optim.lr=0.001 optim.lr=0.002", 2, "given twice", {}),
    ("the seed given twice", "train digits seed=1 seed.master=2", 2, "given twice", {}),
    ("misspelled key", "train digits train.bach_size=8", 2, "unknown config key", {}),
    ("misspelled section", "train digits trian.epochs=2", 2, "unknown config key", {}),
    ("unknown option becomes a key", "train digits --bogus 1", 2, "unknown config key", {}),
    ("zero epochs", "train digits train.epochs=0", 2, "train.epochs=0", {}),
    ("negative batch size", "train digits train.batch_size=-4", 2, "train.batch_size=-4", {}),
    ("zero threads", "train digits train.threads=0", 2, "train.threads=0", {}),
    ("negative seed", "train digits seed=-1", 2, "seed.master=-1", {}),
    ("seed not a number", "train digits seed=abc", 2, "seed.master='abc'", {}),
    ("beta out of range", "train digits optim.betas=[0.9,1.5]", 2, "each beta must be", {}),
    ("warm-up of 150%", "train digits schedule.warmup=1.5", 2, "schedule.warmup=1.5", {}),
    ("unknown LR decay", "train digits schedule.decay=exponential", 2, "schedule.decay", {}),
    ("unknown precision", "train digits train.precision=fp8", 2, "train.precision='fp8'", {}),
    ("unknown device", "train digits train.device=tpu", 2, "unknown device", {}),
    ("CUDA on a machine without", "train digits train.device=cuda", 2, "no usable CUDA", {}),
    ("MPS off a Mac", "train digits train.device=mps", 2, "MPS is not available", {}),
    ("unknown eval metric", "train digits eval.metric=auc", 2, "not a classification metric", {}),
    ("a regression eval metric", "train digits eval.metric=mae", 2, "not a classification", {}),
    ("one class", "train digits model.num_labels=1", 2, "classification needs at least 2", {}),
    ("unknown model kind", "train digits model.kind=rnn", 2, "model.kind='rnn'", {}),
    ("dropout of 1.5", "train digits model.dropout=1.5", 2, "model.dropout=1.5", {}),
    ("missing model folder", "train digits model.name=./no_model", 2, "is missing", {}),
    ("freezing more layers than exist", "train digits train.freeze_layers=9", 2, "only 3", {}),
    ("a setting of another optimizer", "train digits optim.momentum=0.9", 2, "not a setting", {}),
    ("text augmentation of images", "train digits augment.mask=0.1", 2, "does not apply", {}),
    # -- the diagnosis
    ("a monitor threshold out of range", "train digits monitor.spike_z=-1", 2, "spike_z", {}),
    ("an unknown monitor action", "train digits monitor.on_spike=panic", 2, "'warn' or 'stop'", {}),
    (
        "a notify command that does not exist",
        "train digits monitor.notify=no-such-notifier",
        2,
        "command 'no-such-notifier' not found",
        {},
    ),
    ("a negative training sample", "train digits eval.train_sample=-5", 2, "train_sample", {}),
    ("a class name missing", "train digits data.label_names=[a,b]", 2, "2 names for", {}),
    ("diagnose an unknown run", "diagnose 0123abc", 2, "unknown run id '0123abc'", {}),
    ("diagnose in another format", "diagnose {finished} --format xml", 2, "use text or json", {}),
    # -- data
    ("missing data file", "train digits data.train=data/digits/no.npz", 2, "is missing", {}),
    ("unknown data format", "train digits data.format=parquet", 2, "data.format", {}),
    ("a data file that is not npz", "train digits data.train=dvc.yaml", 2, "cannot be read", {}),
    ("a truncated data file DVC tracks", "train digits", 2, "dvc checkout", {"truncate": True}),
    # -- the tracking store
    (
        "store in a folder that cannot exist",
        "train digits",
        2,
        "cannot open the tracking store",
        {"MLFLOW_TRACKING_URI": "sqlite:////dev/null/store/mlflow.db"},
    ),
    (
        "unknown store scheme",
        "train digits",
        2,
        "no tracking store for the scheme 'foo:'",
        {"MLFLOW_TRACKING_URI": "foo://bar"},
    ),
    # -- resume
    ("resume an unknown run", "train digits --resume 0123abc", 2, "unknown run id '0123abc'", {}),
    ("resume without a run id", "train digits --resume", 2, "requires an argument", {}),
    ("resume a finished run", "train digits --resume {finished}", 2, "the run is finished", {}),
    ("resume a repeat run", "train digits --resume {repeat}", 2, "not a training run", {}),
    ("resume another project's run", "train vader --resume {killed}", 2, "belongs to project", {}),
    (
        "resume with another config",
        "train digits --resume {killed} optim.lr=0.5",
        2,
        "another config",
        {},
    ),
    (
        "resume without tracking",
        "train digits --resume {killed} --no-track",
        2,
        "--resume needs tracking",
        {},
    ),
    (
        "resume a tampered checkpoint",
        "train digits --resume {poisoned}",
        2,
        "outside the allowed types",
        {},
    ),
    # -- repeat
    ("zero seeds", "repeat digits --seeds 0", 2, "--seeds '0'", {}),
    ("seeds not numbers", "repeat digits --seeds x", 2, "--seeds 'x'", {}),
    ("a seed twice", "repeat digits --seeds 1,1", 2, "distinct", {}),
    ("an unknown executor", "repeat digits --executor threads", 2, "--executor threads", {}),
    ("a GPU share above 1 not whole", "repeat digits --gpus-per-seed 1.5", 2, "whole GPUs", {}),
    ("zero jobs", "repeat digits --jobs 0", 2, "'--jobs'", {}),
    ("alpha above 0.49", "repeat digits --alpha 2", 2, "'--alpha'", {}),
    ("min effect not a number", "repeat digits --min-effect abc", 2, "'--min-effect'", {}),
    ("baseline NaN", "repeat digits --baseline nan", 2, "not a finite number", {}),
    ("baseline a training run", "repeat digits --baseline {finished}", 2, "not a repeat run", {}),
    ("unknown repeat metric", "repeat digits --metric test/auc", 2, "not a classification", {}),
    (
        "a regression repeat metric",
        "repeat digits --metric test/mae",
        2,
        "not a classification",
        {},
    ),
    ("seed as an override", "repeat digits seed=3", 2, "come from --seeds", {}),
    ("bad config in a repeat", "repeat digits optim.lr=-1", 2, "optim.lr=-1", {}),
    # -- report, compare
    ("report of a training run", "report {finished}", 2, "is not a repeat run", {}),
    ("unknown output format", "compare --format xml", 2, "--format xml", {}),
    ("plot into a missing folder", "compare --plot /missing/dir/x.png", 2, "does not exist", {}),
    ("plot with an unknown format", "compare --plot forest.txt", 2, "unknown image format", {}),
    ("plot onto a folder", "compare --plot data", 2, "is a folder", {}),
    ("alpha of 0", "compare --alpha 0", 2, "'--alpha'", {}),
    ("malformed filter", "compare --filter 'params.x ==== 1'", 2, "--filter", {}),
    # -- promote, reproduce
    ("promote without a name", "promote {repeat}", 2, "Missing option '--name'", {}),
    ("promote a training run", "promote {finished} --name m", 2, "not a repeat run", {}),
    ("promote with zero seeds", "promote {repeat} --name m --min-seeds 0", 2, "--min-seeds", {}),
    (
        "promote with negative failures",
        "promote {repeat} --name m --max-failed -1",
        2,
        "--max-failed",
        {},
    ),
    ("promote an unknown option", "promote {repeat} --name m --colour red", 2, "colour", {}),
    (
        "reproduce with negative tolerance",
        "reproduce {finished} --tolerance -1",
        2,
        "'--tolerance'",
        {},
    ),
    ("reproduce with zero jobs", "reproduce {finished} --jobs 0", 2, "'--jobs'", {}),
    ("reproduce a run still running", "reproduce {killed}", 2, "finish it first", {}),
    ("a margin of zero", "reproduce {repeat} --margin 0", 2, "give a positive number", {}),
    ("a margin that is not a number", "reproduce {repeat} --margin wide", 2, "--margin wide", {}),
    (
        "a margin for one training run",
        "reproduce {finished} --margin 0.01",
        2,
        "needs a repeat run",
        {},
    ),
    ("fresh seeds that are not seeds", "reproduce {repeat} --seeds x", 2, "--seeds 'x'", {}),
    (
        "unknown numerics profile",
        "train digits train.numerics=fast",
        2,
        "train.numerics='fast'",
        {},
    ),
]
if not torch.cuda.is_available():  # (on a GPU machine the share is placed, not refused)
    CASES.append(("a GPU share with no GPU", "repeat digits --gpus-per-seed 0.25", 2, "no GPU", {}))

assert len({c[0] for c in CASES}) == len(CASES), "case names are keys"
WORKERS = 2  # cases run two at a time (each is a process); the store is compared around them


def _snapshot() -> dict:
    """Every run in the store: status, end time, tags, params, metrics (what must not change)."""
    client = mlflow.MlflowClient()
    exps = [e.experiment_id for e in client.search_experiments()]
    runs = mlflow.search_runs(exps, output_format="list") if exps else []
    models = [(m.name, len(client.search_model_versions(f"name='{m.name}'")))
              for m in client.search_registered_models()]  # fmt: skip
    return {
        "runs": {
            r.info.run_id: (
                r.info.status,
                r.info.end_time,
                sorted(r.data.tags.items()),
                sorted(r.data.params.items()),
                sorted(r.data.metrics.items()),
            )
            for r in runs
        },  # fmt: skip
        "models": models,
    }


@pytest.fixture(scope="module")
def store(built_repo, tmp_path_factory):
    """A repo copy and a store holding a repeat (1 finished seed) and two orphaned runs."""
    base = tmp_path_factory.mktemp("bad")
    repo = copy_repo(built_repo, base)
    uri = f"sqlite:///{base / 'mlflow.db'}"
    env = {"MLFLOW_TRACKING_URI": uri}
    rep = run(["xp", "repeat", "digits", *FAST.split(), "--seeds", "1"], repo, env=env)
    ids = {"repeat": parent_id_in(rep.stdout)}
    ids["finished"] = (
        mlflow.MlflowClient(uri)
        .search_runs(
            [mlflow.MlflowClient(uri).get_run(ids["repeat"]).info.experiment_id],
            "tags.`xp.kind` = 'train'",
        )[0]
        .info.run_id
    )
    proc = run(["xp", "train", "digits", *FAST.split(), "train.checkpoint_every=5"], repo,
               env={**env, supervise.FAULT_ENV: "step@7"}, check=False)  # fmt: skip
    # one orphan serves both: every other check on it comes before its checkpoint is read
    ids["killed"] = ids["poisoned"] = next(
        x.split()[1] for x in proc.stdout.splitlines() if x.startswith("run ")
    )
    state = repo / ".xp" / "runs" / ids["poisoned"] / "checkpoints" / "last" / "trainer_state.pt"
    torch.save({"position": Path("/etc/passwd")}, state)  # an object weights_only refuses
    return repo, uri, ids


def _run_case(repo: Path, uri: str, ids: dict, case: tuple) -> tuple:
    _, command, _, _, change = case
    env = {"MLFLOW_TRACKING_URI": uri, "NO_COLOR": "1"}
    env.update({k: v for k, v in change.items() if k.isupper()})
    if not change.get("truncate"):
        return run(["xp", *shlex.split(command.format(**ids))], repo, env=env, check=False)
    # run alone, after the others: they read this file, and a rewrite (even of the same bytes)
    # leaves it empty for a moment
    data = repo / "data" / "digits" / "train.npz"
    saved = data.read_bytes()
    data.write_bytes(saved[: len(saved) // 2])
    try:
        return run(["xp", *shlex.split(command.format(**ids))], repo, env=env, check=False)
    finally:
        data.write_bytes(saved)


@pytest.fixture(scope="module")
def outcomes(store, monkeypatch_module):
    """Every case's process, and the store before and after all of them."""
    from concurrent.futures import ThreadPoolExecutor

    repo, uri, ids = store
    monkeypatch_module.setenv("MLFLOW_TRACKING_URI", uri)
    before = _snapshot()
    alone = [c for c in CASES if c[4].get("truncate")]
    with ThreadPoolExecutor(WORKERS) as pool:
        procs = dict(zip((c[0] for c in CASES if c not in alone),
                         pool.map(lambda c: _run_case(repo, uri, ids, c),
                                  [c for c in CASES if c not in alone])))  # fmt: skip
    for c in alone:
        procs[c[0]] = _run_case(repo, uri, ids, c)
    after = _snapshot()
    table = os.environ.get("XP_BAD_INPUTS_TABLE")
    if table:
        rows = ["| mistake | command | what the user sees (exit code) |", "|---|---|---|"]
        for case, command, *_ in CASES:
            line = (procs[case].stderr.strip().splitlines() or [""])[-1]
            named = sorted(ids, key=lambda n: "{" + n + "}" not in command)  # its own role first
            for name in named:  # (one orphan plays two roles)
                line = line.replace(ids[name], f"<{name} run id>")
            line = line.replace(uri, "sqlite:///<store>").replace(str(repo), "<repo>")
            line = line.replace("|", "/")
            shown = command.format(**{k: f"<{k} run id>" for k in ids})
            rows.append(
                f"| {case} | {_code('xp ' + shown)} | {_code(line)} ({procs[case].returncode}) |"
            )
        Path(table).write_text("\n".join(rows) + "\n")
    return procs, before, after


def _code(text: str) -> str:
    """A Markdown code span that may itself hold backticks."""
    return f"`` {text} ``" if "`" in text else f"`{text}`"


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_no_mistake_changed_a_recorded_run(outcomes):
    _, before, after = outcomes
    assert after == before


@pytest.mark.parametrize(("case", "command", "code", "says", "change"), CASES,
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_a_mistake_is_one_line(outcomes, case, command, code, says, change):
    if "CUDA" in case and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = outcomes[0][case]
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert says in lines[0], lines[0]
