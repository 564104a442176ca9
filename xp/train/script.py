"""A script project's seed: xp records the run, hands it to the user's command, and judges the end.

Before the script starts, everything RUN_SCHEMA promises that xp can know is recorded (params,
every seed, the DVC md5 of every data file, git commit and diff, environment and numerics,
`xp.command`); then the run is handed over (`xp.record.handoff`): the script's metrics, whether
through an xp integration or its own MLflow calls, land in that run. When it exits, its exit
code and what it logged give the outcome:

- exit 0 with `test/<metric>` logged: `ok` (or what an integration set: `early_stopped`, ...);
  exit 0 without it: `failed`, naming the metric and how to log it (a script that logged
  `test_f1` the HF way has it copied to `test/f1`);
- a non-zero exit: the seed crashed (FAILED, no outcome), the last lines of its stderr in
  `xp.failure`;
- stopped by Ctrl-C/SIGTERM (forwarded to the script, which checkpoints) or killed by a signal:
  KILLED, resumable with `--resume`, which hands the script its last checkpoint as `{resume}`;
- a run the script opened on its own (it did not join `MLFLOW_RUN_ID`) is found and named.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

from xp import XpError
from xp.config import ScriptConfig, metrics_for, render
from xp.diagnose import audit
from xp.record import supervise
from xp.record import tags as record
from xp.record.handoff import CHECKPOINT_TAG, OPENED_BY_TAG, STOP_CODES, Handoff
from xp.record.track import Tracker, start_tracker
from xp.record.workspace import Workspace
from xp.train.data_audit import audit_splits, record_audit
from xp.train.result import Events, Result, no_events
from xp.train.script_diagnosis import diagnose_script_run
from xp.train.script_process import ScriptProcess
from xp.train.seed import derive_seeds


def train_script(
    config: ScriptConfig,
    workspace: Workspace | Path,
    *,
    overrides: list[str] | None = None,
    track: bool = True,
    resume: str | None = None,
    group: str | None = None,
    events: Events = no_events,
) -> Result:
    """Run one seed of a script project and record it.

    Args: as `xp.train.loop.train`.

    Returns:
        The outcome, the test metrics the script logged and the run id.

    Raises:
        XpError: missing data, an unknown or unresumable run.
    """

    process = ScriptProcess.prepare(config, Workspace.of(workspace).root)  # imports meanwhile
    try:
        return _train(config, Workspace.of(workspace), process, overrides or [], track, resume,
                      group, events)  # fmt: skip
    finally:
        process.cancel()  # (a run that never reached its script)


def _train(config: ScriptConfig, workspace: Workspace, process: ScriptProcess,
           overrides: list[str], track: bool, resume: str | None, group: str | None,
           events: Events) -> Result:  # fmt: skip
    from xp.train.devices import device_label, pick_device

    seeds = derive_seeds(config.seed.master, config.seed.model_dump(exclude={"master"}))
    supervise.training_seed(config.seed.master)
    t = config.train
    if resume and not track:
        raise XpError("--resume needs tracking: the run to continue lives in the store")
    device = pick_device(t.device)
    prov = record.gather(config, workspace, ("script", config.command), device_label(device))
    skipped = record.skipped_summary(prov.git)
    if skipped:
        events("warning", {"message": skipped})
    audited, not_audited = audit_splits(config, workspace, prov.data)
    said = audit.warning(audited) if audited else None
    if said:
        events("warning", {"message": said})
    if track:
        from xp.record.store import configure_store

        configure_store(workspace)
    tags = record.training_tags(config, prov, workspace, overrides, group)
    lock, recorded = None, {}
    if resume:
        from xp.train.resume import claim_run

        recorded, lock = claim_run(workspace, resume, config.project, tags)
        tags = {}  # the reopened run keeps its own provenance
    tracker = start_tracker(track, config.project, workspace, resume_run_id=resume, tags=tags)
    if lock is None and track:
        lock = supervise.try_lock(workspace, tracker.run_id)
    with supervise.closed_on_error(tracker, lock):
        if not resume or "xp.recorded" not in recorded:
            record.write(tracker, config, seeds, prov)
            record_audit(tracker, audited, not_audited)
        run_dir = workspace.run_dir(tracker.run_id)
        run_dir.mkdir(parents=True, exist_ok=True)
        handoff = Handoff(
            run_id=tracker.run_id, project=config.project, task=config.task,
            metric=config.eval.metric or "f1", run_dir=run_dir,
            seeds={"master": config.seed.master, **seeds}, deterministic=t.deterministic,
            resume_from=_resume_point(workspace, resume) if resume else None,
            threads=t.threads, checkpoint_every=t.checkpoint_every, workspace=workspace.root,
        )  # fmt: skip
        values = {f"seed.{k}": v for k, v in seeds.items() if k != "split"}
        if config.seed.split is not None:
            values["seed.split"] = seeds["split"]
        values.update({"seed": config.seed.master, "run_dir": str(run_dir), "device": str(device),
                       "resume": str(handoff.resume_from or ""), "threads": t.threads})  # fmt: skip
        argv = render(config, values, sys.executable)
        tracker.set_tags({"xp.script.argv": shlex.join(argv)[:5000]})
        tracker.flush()
        events("start", {"run_id": tracker.run_id, "tracking": tracker.enabled})
        supervise.fault_point("setup")
        env = {**os.environ, **handoff.to_env(), "XP_TRACK": "1" if tracker.enabled else "0"}
        if not tracker.enabled:  # nothing to join: the script's own MLflow calls go elsewhere
            env.pop("MLFLOW_RUN_ID", None)
        started = time.perf_counter()
        code, tail, stopped = process.run(argv, env, workspace.root)
        seconds = time.perf_counter() - started
        tracker.set_tags({"xp.time.fit_seconds": f"{seconds:.3f}",
                          "xp.script.exit_code": str(code)})  # fmt: skip
        return _judge(config, tracker, code, tail, stopped)


def _resume_point(workspace: Workspace, run_id: str) -> Path | None:
    """The last checkpoint the script of a killed run saved (local, else fetched from the run's
    `checkpoints/last` artifacts); None when it saved none (the script starts over)."""
    from xp.record.artifacts import fetch_artifacts
    from xp.record.track import get_run

    saved = get_run(run_id).data.tags.get(CHECKPOINT_TAG)
    if saved and Path(saved).exists():
        return Path(saved)
    work = workspace.run_dir(run_id)
    last = work / "checkpoints" / "last"
    if not last.exists():
        fetch_artifacts(run_id, "checkpoints/last", work / "checkpoints")
    if last.exists():
        inner = sorted(p for p in last.iterdir() if p.is_dir())  # an HF `checkpoint-N` folder
        return inner[-1] if len(inner) == 1 and not any(last.glob("*.*")) else last
    return None


def _judge(
    config: ScriptConfig, tracker: Tracker, code: int, tail: list[str], stopped: str | None
) -> Result:
    """The outcome of a script's seed from its exit and what it logged; closes the run."""
    run_id = tracker.run_id
    metric = config.eval.metric or "f1"
    by_signal = {v: k for k, v in STOP_CODES.items()}
    if stopped or code in by_signal or code < 0:
        name = stopped or by_signal.get(code) or signal.Signals(-code).name
        tracker.end("KILLED")
        return Result(run_id, "killed", "KILLED",
                      f"stopped by {name}; resume with --resume {run_id}", signal=name)  # fmt: skip
    recorded = _recorded(tracker, config.task)
    tags, metrics = recorded["tags"], recorded["metrics"]
    test = {k.removeprefix("test/"): v for k, v in metrics.items() if k.startswith("test/")}
    best = {k.removeprefix("best/val/"): v for k, v in metrics.items()
            if k.startswith("best/val/")}  # fmt: skip
    own = recorded["own_runs"]
    if code != 0:  # crashed: FAILED with no outcome, so a repeat's re-run starts it over
        failure = tags.get("xp.failure") or _crash_line(code, tail)
        outcome = tags.get("xp.outcome", "")
        tracker.set_tags({"xp.failure": failure})
        tracker.end("FAILED")
        return Result(run_id, outcome or "crashed", "FAILED", failure, test=test, best_val=best)
    outcome, message = tags.get("xp.outcome") or "ok", tags.get("xp.failure", "")
    if tracker.enabled and outcome not in ("failed", "pruned") and metric not in test:
        outcome = "failed"
        message = (
            f"seed {config.seed.master} finished but logged no test/{metric}; log it with "
            f"mlflow.log_metric('test/{metric}', value) or an xp integration (docs/scripts.md)"
        )
        if own:
            message += (
                f"; the script opened run(s) {', '.join(own)} of its own instead of the run it "
                "was handed: call mlflow.start_run() with no run id (it joins MLFLOW_RUN_ID)"
            )
    if tracker.enabled:  # what its logged metrics say of it: monitor replayed, overfitting
        diagnose_script_run(tracker, config)
    final = {"xp.outcome": outcome}
    if message:
        final["xp.failure"] = message
    if own:
        final["xp.script.own_runs"] = ",".join(own)
    tracker.set_tags(final)
    status = "FAILED" if outcome == "failed" else "FINISHED"
    tracker.end(status)
    return Result(run_id, outcome, status, message, test=test, best_val=best)


def _recorded(tracker: Tracker, task: str) -> dict[str, Any]:
    """What the script left in its run: tags, latest metrics (a `test_<m>` logged the HF way
    copied to `test/<m>`), and any run it opened on its own."""
    if not tracker.enabled:
        return {"tags": {}, "metrics": {}, "own_runs": []}
    from xp.record.track import get_run, search_runs

    tracker.flush()
    run = get_run(tracker.run_id)
    metrics = dict(run.data.metrics)
    aliases = {f"test/{m}": metrics[f"test_{m}"] for m in metrics_for(task)
               if f"test/{m}" not in metrics and f"test_{m}" in metrics}  # fmt: skip
    if aliases:
        tracker.log_metrics(aliases, 0)
        tracker.flush()
        metrics.update(aliases)
    own = search_runs(f"tags.`{OPENED_BY_TAG}` = '{tracker.run_id}'")
    others = [r.info.run_id for r in own if r.info.run_id != tracker.run_id]
    return {"tags": dict(run.data.tags), "metrics": metrics, "own_runs": others}


def _crash_line(code: int, tail: list[str]) -> str:
    """`the script exited with code 1: <its last stderr lines>` on one line."""
    last = [line.strip() for line in tail if line.strip()]
    where = " | ".join(last[-3:]) if last else "it printed nothing on stderr"
    return f"the script exited with code {code}: {where}"
