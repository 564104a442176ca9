"""A run's own toll (benchmarks/run_toll.py): what a digits run no longer pays stays unpaid, and
what replaced it answers as the original did."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata

import pytest
import torch

from xp.record import provenance
from xp.train.recipe import build_scheduler


def test_the_training_path_imports_no_transformers() -> None:
    """A digits run's setup, loop, end and schedule: transformers (and peft, which its
    optimization module imports: ~3 s) only where a model or tokenizer needs them."""
    code = """
import sys
import torch
from xp.train import fit, finish, loop
from xp.train.recipe import build_scheduler
opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
build_scheduler(opt, "linear", 1, 10).step()
print(sorted(m for m in ("transformers", "peft") if m in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("decay", ["linear", "cosine", "constant"])
@pytest.mark.parametrize(("warmup", "total"), [(0, 1), (15, 150), (1, 7), (7, 7), (10, 3)])
def test_schedule_is_transformers_to_the_bit(decay: str, warmup: int, total: int) -> None:
    optimization = pytest.importorskip("transformers.optimization")
    name = {"constant": "constant_with_warmup"}.get(decay, decay)

    def optimizer() -> torch.optim.Optimizer:
        ps = [torch.nn.Parameter(torch.zeros(1)) for _ in range(2)]
        return torch.optim.SGD([{"params": [ps[0]], "lr": 1e-3}, {"params": [ps[1]], "lr": 3e-4}])

    theirs_opt, ours_opt = optimizer(), optimizer()
    theirs = optimization.get_scheduler(
        name, theirs_opt, num_warmup_steps=warmup, num_training_steps=total
    )
    ours = build_scheduler(ours_opt, decay, warmup, total)
    for _ in range(total + 3):
        assert ours.get_last_lr() == theirs.get_last_lr()
        theirs_opt.step(), ours_opt.step(), theirs.step(), ours.step()
    assert ours.state_dict() == theirs.state_dict()  # a checkpoint either wrote resumes in both


def test_pip_freeze_reads_the_same_names_and_versions_as_the_metadata() -> None:
    seen: dict[str, str] = {}
    for dist in metadata.distributions(path=list(sys.path)):
        if dist.metadata["Name"]:
            key = re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
            seen.setdefault(key, f"{dist.metadata['Name']}=={dist.version}")
    expected = "".join(f"{line}\n" for line in sorted(seen.values(), key=str.lower))
    assert provenance.pip_freeze() == expected


def test_a_tracked_digits_run_opens_no_store_and_its_writer_records_it_all(repo) -> None:
    """The training process imports neither MLflow nor SQLAlchemy (its writer opens the store,
    on another core: `xp.record.ops`), and the record is whole: the run FINISHED with its params,
    provenance, dataset inputs, error figures and model, and MLflow's context tags are the
    training process's, not the writer's."""
    import json
    import os

    import mlflow

    from tests.conftest import FAST_DIGITS

    code = """
import json, sys
from xp.train import command
rc = command.run("digits", sys.argv[1:])
print(json.dumps([rc, sorted(m for m in ("mlflow", "sqlalchemy") if m in sys.modules)]))
"""
    done = subprocess.run([sys.executable, "-c", code, *FAST_DIGITS], cwd=repo,
                          capture_output=True, text=True, env=os.environ)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == [0, []]
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    client = mlflow.MlflowClient()
    assert run.info.status == "FINISHED" and run.data.tags["xp.recorded"] == "true"
    assert run.data.params["train.epochs"] == "3" and run.data.tags["xp.outcome"] == "ok"
    assert run.data.tags["mlflow.source.name"] == "-c"  # (the trainer's argv[0], as start_run)
    assert {d.dataset.name for d in run.inputs.dataset_inputs} >= {"train", "validation", "test"}
    assert {a.path for a in client.list_artifacts(run.info.run_id, "errors")} >= {
        "errors/confusion.png", "errors/errors.json", "errors/wrong.png"}  # fmt: skip
    (model,) = run.outputs.model_outputs
    served = mlflow.pyfunc.load_model(f"models:/{model.model_id}")
    import numpy as np

    answer = served.predict(np.zeros((2, 8, 8), dtype=np.float32))
    assert list(answer.columns[:2]) == ["label", "score"] and len(answer) == 2
