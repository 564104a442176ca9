"""The small API for a training script of one's own (a plain PyTorch loop):

    from xp.integrations import start

    run = start()                                # the run xp handed this process (or a new one)
    torch.manual_seed(run.seeds["init"])          # each seed where it belongs
    state = run.load_checkpoint()                 # None, or what the killed run saved last
    for step in ...:
        run.log({"train/loss": loss}, step)
        if run.should_stop:                       # Ctrl-C or SIGTERM: checkpoint and go
            run.save_checkpoint({...})
            run.stopped()
    run.log_model(model, "pytorch")
    run.finish(test={"f1": f1, "loss": loss})     # test/<metric>: what a repeat judges

Metrics go through xp's writer process (an append per call); `save_checkpoint` makes sure every
metric logged so far is in the store before the checkpoint can be resumed from. The HF `Trainer`
callback (`xp.integrations.hf`) is built on the same run.
"""

from __future__ import annotations

import atexit
import math
import os
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

from xp import XpError
from xp.record import supervise
from xp.record.handoff import CHECKPOINT_TAG, STOP_CODES, Handoff
from xp.record.workspace import Workspace

CHECKPOINT_FILE = "state.pt"


class Run:
    """One training run, as a script logs to it."""

    def __init__(self, handoff: Handoff, tracker: Any):
        self.handoff = handoff
        self._tracker = tracker
        self.run_id: str = tracker.run_id
        self.seeds: dict[str, int] = dict(handoff.seeds)
        self.seed: int = self.seeds.get("master", 0)
        self.run_dir: Path = handoff.run_dir
        self.resume_from: Path | None = handoff.resume_from
        self.metric: str = handoff.metric
        self.signal: str | None = None  # SIGINT / SIGTERM once asked to stop
        self._closed = False
        self._nan_fault = str(self.seed) in os.environ.get("XP_FAULT_NAN_SEEDS", "").split(",")
        supervise.training_seed(self.seed)  # (XP_FAULT_KILL_SEEDS picks seeds by it)

    # -- stopping -----------------------------------------------------------------------------
    @property
    def should_stop(self) -> bool:
        """True once Ctrl-C or SIGTERM arrived: save a checkpoint, then call `stopped()`."""
        return self.signal is not None

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.signal is not None:  # a second one: stop now
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name

    def stopped(self) -> NoReturn:
        """End the process as a stopped run (exit 130/143): the run is KILLED, resumable (said
        here too, for when the xp process that handed it over is gone: a kill -9 of a seed)."""
        self._end("KILLED")
        sys.exit(STOP_CODES.get(self.signal or "SIGINT", 130))

    # -- logging ------------------------------------------------------------------------------
    def log(self, metrics: dict[str, float], step: int) -> None:
        """Log metrics at an optimizer step (`train/loss`, `val/f1`, ...). A NaN or infinite
        `train/loss` ends the run as failed."""
        metrics = {k: float(v) for k, v in metrics.items()}
        if "train/loss" in metrics and self._nan_fault:  # XP_FAULT_NAN_SEEDS, as xp's trainer
            metrics["train/loss"] = math.nan
        self._tracker.log_metrics(metrics, step)
        loss = metrics.get("train/loss")
        if loss is not None and not math.isfinite(loss):
            self.fail(f"loss became {loss} at step {step}")
        if "train/loss" in metrics:  # once per step: XP_FAULT_KILL / XP_FAULT_STOP=step@N
            supervise.fault_point("step", step)

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._tracker.set_tags(tags)

    def flush(self) -> None:
        """Block until every metric logged so far is in the store."""
        self._tracker.flush()

    # -- checkpoints --------------------------------------------------------------------------
    def checkpoint_saved(self, path: Path | str) -> None:
        """Say that a resumable checkpoint now lies at `path` (a trainer that saves its own):
        `xp train --resume` hands it back as `{resume}`. The record is flushed first, so it is
        never behind the checkpoint."""
        self.flush()
        self.set_tags({CHECKPOINT_TAG: str(Path(path).resolve())})

    def save_checkpoint(self, state: dict[str, Any]) -> Path:
        """Save `state` (tensors, numbers, RNG states; what `torch.save` takes) atomically as the
        run's last checkpoint; returns its path."""
        import torch

        folder = self.run_dir / "checkpoints" / "last"
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{CHECKPOINT_FILE}.tmp"
        torch.save(state, tmp)
        os.replace(tmp, folder / CHECKPOINT_FILE)
        self.checkpoint_saved(folder)
        return folder

    def load_checkpoint(self) -> dict[str, Any] | None:
        """What the killed run this one resumes saved last, or None (start from scratch)."""
        import torch

        if self.resume_from is None:
            return None
        path = self.resume_from
        path = path / CHECKPOINT_FILE if path.is_dir() else path
        try:
            return torch.load(path, weights_only=True)
        except Exception as e:
            raise XpError(f"cannot resume from {path}: {e}") from None

    def fingerprint(self, data_order: Any = None, model: Any = None) -> None:
        """Record what this run's seeds drive, as training starts (after seeding, before the
        first step), so `xp repeat` can say whether each seed took effect: the first training
        example indices of the first epoch, the model's initial values, and (always) the state of
        torch's generator that dropout draws from. A resumed run records nothing new."""
        if self.resume_from is not None:
            return
        from xp.train import fingerprint

        values = {"dropout": fingerprint.of_rng() if "torch" in sys.modules else None}
        if data_order is not None:
            values["data_order"] = fingerprint.of_order(data_order)
        if model is not None:
            values["init"] = fingerprint.of_params(model)
            from xp.train import adapter  # (counts; a peft model's adapter and base identity)

            self.set_tags(adapter.recorded(model, Path.cwd()))  # (a script runs in the repo)
        self.set_tags(fingerprint.tags(**values))

    def recorded_evals(self) -> dict[int, dict[str, float]]:
        """Step -> validation metrics already in the run (a resumed run's evaluations before its
        kill)."""
        if not self._tracker.enabled:
            return {}
        from xp.record.track import metric_histories

        out: dict[int, dict[str, float]] = {}
        for key, points in metric_histories(self.run_id).items():
            for step, value in points if key.startswith("val/") else []:
                out.setdefault(step, {})[key.removeprefix("val/")] = value
        return out

    def best_evaluation(
        self, evals: dict[int, dict[str, float]], step: int | None = None
    ) -> tuple[int, dict[str, float]] | None:
        """(step, validation metrics) of the best checkpoint among evaluations by step: the one at
        `step` (the trainer's own best), else the best by the project's metric (the earliest of
        equals)."""
        if step in evals:
            return step, evals[step]
        from xp.config import higher_is_better

        metric = self.metric
        scored = [(s, v) for s, v in evals.items() if math.isfinite(v.get(metric, math.nan))]
        if not scored:
            return None
        sign = 1 if higher_is_better(metric) else -1
        return max(scored, key=lambda sv: (sign * sv[1][metric], -sv[0]))

    def log_artifacts(self, folder: Path, artifact_path: str) -> None:
        self._tracker.log_artifacts(Path(folder), artifact_path)

    # -- the end ------------------------------------------------------------------------------
    def log_model(self, model: Any, flavor: str = "pytorch", **kwargs: Any) -> str:
        """Log the final model as the run's `model` (flavor `pytorch` or `transformers`, whose
        model is `{"model": ..., "tokenizer": ...}`), so that `xp promote` can register it."""
        if flavor == "pytorch":  # the script's own classes are pickled with the model, not xp's
            kwargs.setdefault("code_paths", None)
        return self._tracker.log_model(model, flavor, **kwargs)

    def finish(
        self,
        test: dict[str, float] | None = None,
        best_val: dict[str, float] | None = None,
        outcome: str | None = None,
        step: int = 0,
    ) -> None:
        """Log the test metrics (`test/<m>`) and the best checkpoint's validation metrics
        (`best/val/<m>`), an outcome if not `ok` (`early_stopped`), and flush."""
        final = {f"test/{k}": v for k, v in (test or {}).items()}
        final.update({f"best/val/{k}": v for k, v in (best_val or {}).items()})
        if final:
            self._tracker.log_metrics({k: float(v) for k, v in final.items()}, step)
        if outcome:
            self.set_tags({"xp.outcome": outcome})
        self.close()

    def fail(self, message: str) -> NoReturn:
        """End the run as failed (a NaN loss): the reason in `xp.failure`, exit code 1."""
        self.set_tags({"xp.outcome": "failed", "xp.failure": message})
        self._end("FAILED")
        print(f"error: {message}", file=sys.stderr, flush=True)
        sys.exit(1)

    def _end(self, status: str) -> None:
        """Flush and close the run with `status` (MLflow would otherwise end it FINISHED as
        this process exits)."""
        if self._closed:
            return
        self._closed = True
        self._tracker.end(status)

    def close(self) -> None:
        """Flush what is buffered (also done at exit). The run stays open: xp, which handed it
        over, closes it with the outcome; a run this process opened itself is ended here."""
        if self._closed:
            return
        self._closed = True
        self._tracker.flush()
        if os.environ.get("XP_RUN_ID") != self.run_id:
            self._tracker.end("FINISHED")


def first_indices(loader: Any) -> list[int] | None:
    """The example indices the first epoch of a DataLoader will start with, read from a copy of
    its sampler with torch's generator put back after (the training order is left as it is);
    None where they cannot be known (an iterable dataset)."""
    import copy
    import itertools

    import torch

    sampler = getattr(loader, "batch_sampler", None) or getattr(loader, "sampler", None)
    if sampler is None:
        return None
    try:
        with torch.random.fork_rng(devices=[]):
            batches = itertools.islice(iter(copy.deepcopy(sampler)), 8)
            out: list[int] = []
            for batch in batches:
                out.extend(batch if isinstance(batch, list) else [int(batch)])
            return out or None
    except Exception:  # a sampler that cannot be copied or read ahead: no fingerprint
        return None


_RUN: Run | None = None


def start(project: str | None = None) -> Run:
    """The run this process trains: the one xp handed it (`xp train`/`repeat` of a script
    project), or, when the script runs on its own, a new MLflow run in experiment `project`
    (default: the script's folder name). Calling it again returns the same run.

    Applies what xp asks of the process: deterministic kernels, its share of CPU threads; and
    turns Ctrl-C/SIGTERM into `should_stop`.
    """
    global _RUN
    if _RUN is not None:
        return _RUN
    from xp.record.track import MlflowTracker, NullTracker, start_tracker

    handoff = Handoff.from_env()
    if handoff is not None:
        if os.environ.get("XP_TRACK") == "0":
            tracker: Any = NullTracker()
            tracker.run_id = handoff.run_id
        else:
            import mlflow

            tracker = MlflowTracker(handoff.run_id)
            if mlflow.active_run() is None:  # the handed run is this process's active run: a
                mlflow.start_run(run_id=handoff.run_id)  # model, the script's own calls land in it
    else:
        workspace = Workspace.find(Path.cwd())
        name = project or Path(sys.argv[0]).resolve().parent.name
        tracker = start_tracker(True, name, workspace)
        import mlflow

        mlflow.start_run(run_id=tracker.run_id)  # the script's own MLflow calls land in it
        handoff = Handoff(run_id=tracker.run_id, project=name, task="classification",
                          metric="f1", run_dir=workspace.run_dir(tracker.run_id))  # fmt: skip
    _apply(handoff)
    from xp.train.console import quiet_libraries

    quiet_libraries()  # MLflow's notes on model cards and pickles, as under `xp train`
    _RUN = Run(handoff, tracker)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _RUN._on_signal)
    atexit.register(_RUN.close)  # after the writer's own: runs before it closes
    return _RUN


def _apply(handoff: Handoff) -> None:
    """Deterministic kernels and the seed's share of threads, for torch (a script that does not
    import torch before `start()` asks nothing of it)."""
    if "torch" not in sys.modules:
        return
    import torch

    if handoff.threads:
        torch.set_num_threads(handoff.threads)
    if handoff.deterministic:
        from xp.train.seed import set_deterministic

        set_deterministic(True)
