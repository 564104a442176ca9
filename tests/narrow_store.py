"""A randomised store of training runs for the narrow read's equivalence tests, and the check that
`xp compare` gives the same table through `xp.record.narrow` as through `search_runs`.

The store holds what a real one meets: several experiments (one deleted), configurations that
differ in params, seeds with the same start time (ties broken by run id), failed, killed and
still-running runs, runs without the metric or with NaN, equal metric values across
configurations, reproductions, two test splits, a folds design, monitor events, forgetting and
leakage, a deleted run, and runs that are not training runs.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

FILTERS = [
    None,
    "params.`optim.lr` = '0.01'",
    "metrics.`test/f1` > 0.8",
    "attributes.status = 'FINISHED'",
    "tags.`mlflow.runName` LIKE '%s1'",
    "attributes.run_name ILIKE 'DIGITS%'",
    "params.project = 'digits' and metrics.`test/accuracy` >= 0.5",
    "tags.`xp.data.test.md5` != 'old'",
]
VALUES = [0.7, 0.75, 0.8, 0.8, 0.85, 0.9]  # (equal values across configurations: ties)


def build_store(client: Any, seed: int, n_runs: int = 48) -> list[str]:
    """Experiments full of runs (names `narrow-<seed>-<i>`); returns the live experiments' names."""
    from mlflow.entities import Metric, Param, RunTag

    rng = np.random.default_rng(seed)
    names = [f"narrow-{seed}-{i}" for i in range(3)]
    exps = [client.create_experiment(n) for n in names]
    gone = client.create_experiment(f"narrow-{seed}-deleted")
    lrs = ["0.01", "0.001", "0.003", "0.01", "0.03"]
    for i in range(n_runs):
        c = int(rng.integers(0, len(lrs)))
        s = int(rng.integers(1, 4))
        project = "digits" if c != 4 else "vader"
        folds = c == 2 and rng.random() < 0.7
        fold = int(rng.integers(0, 3)) if folds else None
        exp = gone if i == 3 else exps[int(rng.integers(0, 3))]
        params = {"optim.lr": lrs[c], "train.batch_size": str(32 * (1 + c % 2)), "seed": str(s),
                  "project": project, "exec.jobs": str(int(rng.integers(1, 3)))}  # fmt: skip
        name = f"{project} lr={lrs[c]}" + (f" f{fold}" if folds else "") + f" s{s}"
        tags = {"xp.kind": "train" if rng.random() < 0.9 else "repeat", "xp.project": project,
                "xp.config_hash": hashlib.md5(f"{c}{c == 3 and i % 2}".encode()).hexdigest(),
                "xp.data.test.md5": "old" if rng.random() < 0.15 else "new",
                "mlflow.runName": name.upper() if rng.random() < 0.2 else name}  # fmt: skip
        outcome = rng.choice(["ok", "ok", "ok", "early_stopped", "failed", None])
        if outcome is not None:
            tags["xp.outcome"] = str(outcome)
        if rng.random() < 0.08:
            tags["xp.reproduces"] = "some-run"
        if rng.random() < 0.1:
            tags["xp.audit.leakage"] = str(round(float(rng.random()) / 10, 3))
        if rng.random() < 0.3:
            tags["xp.diagnosis.overfitting"] = str(rng.choice(["none", "mild", "unknown: x"]))
        if folds:
            params.update({"seed.split": "1", "data.resplit.index": str(fold)})
            tags.update({"xp.split.kind": "kfold", "xp.split.count": "3",
                         "xp.split.index": str(fold), "xp.split.n_train": "90",
                         "xp.split.n_validation": "30"})  # fmt: skip
        metrics = {"test/accuracy": float(rng.random()), "train/loss": 0.1}
        if outcome != "failed" and rng.random() < 0.95:
            value = VALUES[c + int(rng.integers(0, 2))] + float(rng.normal(0, 0.02)) * (s > 1)
            metrics["test/f1"] = float("nan") if rng.random() < 0.04 else value
        if rng.random() < 0.3:
            metrics[f"monitor/{rng.choice(['spike', 'plateau'])}"] = float(rng.integers(0, 3))
        if rng.random() < 0.3:
            metrics.update({"retention/drop": float(rng.random()) / 10, "retention/cka": 0.9})
        start = 1_700_000_000_000 + int(rng.integers(0, 12)) * 1000  # (ties in start time)
        run = client.create_run(exp, start_time=start, run_name=name)
        rid = run.info.run_id
        client.log_batch(rid, metrics=[Metric(k, v, start, 1) for k, v in metrics.items()],
                         params=[Param(k, v) for k, v in params.items()],
                         tags=[RunTag(k, v) for k, v in tags.items()])  # fmt: skip
        if rng.random() < 0.3:  # a later value: the latest one counts
            client.log_metric(rid, "test/f1", VALUES[c], timestamp=start + 5, step=2)
        status = rng.choice(["FINISHED", "FINISHED", "FINISHED", "FAILED", "KILLED", "RUNNING"])
        if status != "RUNNING":
            client.set_terminated(rid, str(status), start + 1000)
        if i == 5:
            client.delete_run(rid)
    client.delete_experiment(gone)
    return names


def compare_both(project: str | None, experiment: str | None, filt: str | None,
                 metric: str = "test/f1") -> tuple[Any, Any, list[str]]:  # fmt: skip
    """(narrow result or error, search_runs result or error, warnings the narrow read gave)."""
    from xp.compare import CompareError, fetch_runs, rank_groups

    said: list[str] = []
    outs = []
    for narrow in (True, False):
        try:
            runs = fetch_runs(project, experiment, filt, metric if narrow else None, said.append)
            ids = [r.info.run_id for r in runs]
            outs.append((ids, rank_groups(runs, metric)))
        except CompareError as e:
            outs.append(("error", str(e)))
    return outs[0], outs[1], said


def assert_same(a: Any, b: Any) -> None:
    """The same runs in the same order, and the same table in every format, to the last digit."""
    from xp.compare import render

    assert a[0] == b[0]
    if a[0] == "error":
        assert a[1] == b[1]
        return
    ra, rb = a[1], b[1]
    for fmt in ("json", "csv", "markdown"):
        assert render(ra, fmt) == render(rb, fmt), fmt
    assert [g["run_ids"] for g in ra["groups"]] == [g["run_ids"] for g in rb["groups"]]
    assert (ra["n_runs"], ra["n_failed"]) == (rb["n_runs"], rb["n_failed"])
