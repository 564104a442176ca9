"""A Lightning `Trainer` reporting to the run xp handed it: a logger and a callback, used together.

    from xp.integrations.lightning import XpCallback, XpLogger

    trainer = L.Trainer(logger=XpLogger(), callbacks=[XpCallback(), ModelCheckpoint(...)])
    trainer.fit(module, ckpt_path=args.resume)          # `{resume}` from xp (None: from scratch)
    trainer.test(module, ckpt_path="best")              # self.log("test/f1", ...) -> test/f1

`XpLogger` puts what the module logs (`self.log`) into the run through xp's writer process, under
xp's names (`train/loss` as it is; `train_loss` -> `train/loss`, `val_f1` -> `val/f1`, `test_f1`
-> `test/f1`); each checkpoint a `ModelCheckpoint` saves is what `xp train --resume` hands back.
`XpCallback` records the seed fingerprints as training starts, saves a checkpoint at the end of the
epoch and ends the process as stopped on Ctrl-C or SIGTERM (the run is KILLED, resumable; a second
Ctrl-C stops at once), logs the best
evaluation's metrics as `best/val/<m>` when training ends, and the module it tests as the run's
`model` (pytorch flavor: with `ckpt_path="best"`, the best checkpoint's weights).
A NaN or infinite `train/loss` ends the run as failed.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only

from xp.config import metrics_for
from xp.integrations.run import Run, first_indices, start

SPLITS = {"train": "train/", "val": "val/", "validation": "val/", "test": "test/"}


def xp_name(key: str, known: set[str]) -> str | None:
    """A Lightning metric's name as xp records it (`val_f1`, `val/f1` -> `val/f1`; `train_loss`,
    `loss` -> `train/loss`), or None for what xp does not record (`epoch`, step counters)."""
    if key in ("loss", "train_loss_step", "train_loss"):
        return "train/loss"
    for sep in ("/", "_"):
        split, _, name = key.partition(sep)
        if split in SPLITS and (
            name in known or (split == "train" and name in ("lr", "grad_norm"))
        ):
            return f"{SPLITS[split]}{name}"
    return None


class XpLogger(Logger):
    """Lightning's metrics into xp's run (see the module's docstring)."""

    def __init__(self, run: Run | None = None):
        super().__init__()
        self.run = run or start()
        self._known = set(metrics_for(self.run.handoff.task))
        self.evals: dict[int, dict[str, float]] = {}  # step -> validation metrics

    @property
    def name(self) -> str:
        return "xp"

    @property
    def version(self) -> str:
        return self.run.run_id

    @property
    def save_dir(self) -> str:
        return str(self.run.run_dir)

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """xp records the project's params and seeds itself; a module's own hyperparameters are
        kept as a text artifact."""
        import json

        try:
            text = json.dumps(dict(params), indent=2, default=str, sort_keys=True)
        except (TypeError, ValueError):
            return
        self.run._tracker.log_text(text + "\n", "lightning/hparams.json")

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        mapped = {}
        for key, value in metrics.items():
            name = xp_name(key, self._known)
            if name is not None:
                mapped[name] = float(value)
        if not mapped:
            return
        step = int(step or 0)
        val = {k.removeprefix("val/"): v for k, v in mapped.items() if k.startswith("val/")}
        if val:
            self.evals.setdefault(step, {}).update(val)
        self.run.log(mapped, step)

    @rank_zero_only
    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        path = getattr(checkpoint_callback, "last_model_path", "") or getattr(
            checkpoint_callback, "best_model_path", ""
        )
        if path and Path(path).is_file():
            self.run.checkpoint_saved(path)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.run.flush()


class XpCallback(Callback):
    """Fingerprints, a stop that checkpoints, best metrics and the model (see the docstring)."""

    def __init__(self, run: Run | None = None, log_model: bool = True):
        self.run = run or start()
        self.log_model = log_model

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        # Lightning's own SIGTERM handling ends `fit` at the next batch, mid-epoch, where a
        # map-style dataset does not resume exactly: xp's stop (at the epoch's end) replaces it
        # for this fit (Lightning puts its handlers back when it ends)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.run._on_signal)
        if self.run.resume_from is None:
            self.run.fingerprint(data_order=first_indices(trainer.train_dataloader),
                                 model=pl_module)  # fmt: skip

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Ctrl-C or SIGTERM: a checkpoint at the end of this epoch, then go (Lightning resumes a
        map-style dataset exactly from an epoch's end, not from the middle of one)."""
        if self.run.should_stop:
            self._stop(trainer)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        """Lightning's own SIGTERM handling ends `fit` with an exception at the next step: the
        same stop, checkpointed."""
        if self.run.should_stop:
            self._stop(trainer)

    def _stop(self, trainer: Any) -> None:
        path = self.run.run_dir / "checkpoints" / "last" / "stopped.ckpt"
        path.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(path)
        self.run.checkpoint_saved(path)
        self.run.log_artifacts(path.parent, "checkpoints/last")
        self.run.stopped()

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        logger = next((lg for lg in trainer.loggers if isinstance(lg, XpLogger)), None)
        evals = dict(logger.evals) if logger is not None else {}
        if self.run.resume_from is not None:  # the evaluations before the kill count too
            evals = {**self.run.recorded_evals(), **evals}
        best = self.run.best_evaluation(evals)
        if best:
            step, values = best
            self.run.log({f"best/val/{k}": v for k, v in values.items()}, step)
            self.run.set_tags({"xp.best_step": str(step)})
        checkpoint = getattr(trainer, "checkpoint_callback", None)
        best_path = getattr(checkpoint, "best_model_path", "")
        if best_path and Path(best_path).is_file():
            self.run.log_artifacts(Path(best_path).parent, "checkpoints/best")
        if trainer.should_stop and trainer.current_epoch + 1 < (trainer.max_epochs or 0):
            self.run.set_tags({"xp.outcome": "early_stopped"})
        self.run.flush()

    def on_test_end(self, trainer: Any, pl_module: Any) -> None:
        """The module tested (the best checkpoint's, with `ckpt_path="best"`) is the run's model."""
        if self.log_model:
            self.run.log_model(pl_module, "pytorch")
        self.run.flush()
