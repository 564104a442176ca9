"""The training loop itself: optimizer steps, evaluations, checkpoints, a stop asked for.

One explicit loop, no callback framework: `Fit.run` walks epochs and batches; `_one_step` is one
optimizer step (`_backward` over augmented micro-batches with the L1 penalty, `_apply_step`:
clipping, the optimizer, the schedule); `_evaluate` measures validation (and the fixed training
sample), keeps the best checkpoint and decides early stopping. A Ctrl-C or SIGTERM stops after
the current step with a resumable checkpoint; every position the loop needs to continue exactly
lives in `state`.
"""

from __future__ import annotations

import math
import os
import signal
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from xp.config import Config
from xp.record import supervise
from xp.record.track import Tracker
from xp.record.workspace import Workspace
from xp.train import checkpoint, recipe, retention
from xp.train.adapter import counts
from xp.train.augment import Augmenter
from xp.train.data import take
from xp.train.evaluation import evaluate, fixed_sample, loss_fn, record_diagnosis, to_device
from xp.train.finish import finish
from xp.train.models import forward, layer_groups
from xp.train.monitoring import Watch, lr_factor, lr_fault
from xp.train.recipe import lowest_trainable, param_groups, total_steps
from xp.train.result import Events, Result, StopHook, improved
from xp.train.seed import epoch_order, rng_state, set_rng_state


class _StopFlag:
    """Turns Ctrl-C / SIGTERM into "stop after this optimizer step"; a second one is immediate."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


class Fit:
    """One run's loop over its optimizer steps, from step 0 or a resumed checkpoint."""

    def __init__(
        self,
        config: Config,
        workspace: Workspace,
        model: torch.nn.Module,
        tokenizer: Any,
        feats: dict[str, dict[str, Any]],
        splits: dict[str, Any],
        seeds: dict[str, int],
        device: torch.device,
        tracker: Tracker,
        saved: dict[str, Any] | None,
        events: Events,
        should_stop: StopHook | None,
        kept: retention.Retention,
        augment: Augmenter,
        base: dict[str, Any] | None = None,
    ) -> None:
        self.config, self.model, self.tokenizer = config, model, tokenizer
        self.feats, self.splits, self.seeds, self.device = feats, splits, seeds, device
        self.tracker, self.events, self.should_stop, self.kept = tracker, events, should_stop, kept
        t = config.train
        work = workspace.run_dir(tracker.run_id) / "checkpoints"
        self.best_dir, self.last_dir = work / "best", work / "last"
        self.groups = layer_groups(model)
        self.optimizer = recipe.build_optimizer(param_groups(model, config), config)
        self.per_epoch, self.total = total_steps(config, len(splits["train"]))
        warmup_steps = int(config.schedule.warmup * self.total)
        self.scheduler = recipe.build_scheduler(
            self.optimizer, config.schedule.decay, warmup_steps, self.total
        )
        self.use_amp = device.type == "cuda" and t.precision != "fp32"
        self.amp_dtype = torch.bfloat16 if t.precision == "bf16" else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and t.precision == "fp16")
        # position and early-stopping state; a resumed run takes them from its last checkpoint
        self.state: dict[str, Any] = {
            "step": 0, "epoch": 0, "next_batch": 0, "best_value": None, "best_step": None,
            "best_val": {}, "bad_evals": 0, "outcome": "ok", "evals": [], "monitor": None,
        }  # fmt: skip
        torch.manual_seed(seeds["dropout"])  # from here on the global RNG only feeds dropout
        if saved is not None:  # the weights are already in the model
            self.optimizer.load_state_dict(saved["optimizer"])
            self.scheduler.load_state_dict(saved["scheduler"])
            self.scaler.load_state_dict(saved["scaler"])
            set_rng_state(saved["rng"])
            self.state.update(saved["position"])
        if tracker.resumed:
            tracker.set_tags({"xp.resumed_at_step": str(self.state["step"])})
        say = lambda message: events("warning", {"message": message})  # noqa: E731
        self.watch = Watch(config.monitor, tracker, work.parent, warmup_steps, say,
                           self.state["monitor"])  # fmt: skip
        self.sample = fixed_sample(feats["train"], config.eval.train_sample,
                                   len(feats["validation"]["labels"]))  # fmt: skip
        self.augment = augment  # a pure function of (seed.augment, epoch, batch): resumes redraw
        self.base = base  # an adapter's base model identity (`xp.train.adapter.identity`)
        self.fault = lr_fault()
        # fault injection, to test failure handling end to end: XP_FAULT_NAN_SEEDS=2,5
        self.nan_fault = str(config.seed.master) in os.environ.get("XP_FAULT_NAN_SEEDS",
                                                                   "").split(",")  # fmt: skip
        self.logged_best = self.state["best_step"] if saved is not None else None
        self.trainable_from: int | None = None
        self.alarm: Any = None  # the monitor's last alarm (a rule set to `stop` ends the run)
        self._set_trainable(self.state["step"])
        if not tracker.resumed:  # what trains as the run starts (an adapter: its own share)
            trainable, total = counts(model)
            tracker.set_tags({"xp.model.trainable_params": str(trainable),
                              "xp.model.total_params": str(total)})  # fmt: skip

    # -- checkpoints ---------------------------------------------------------------------------
    def snapshot(self, directory: Path) -> None:
        self.state["monitor"] = self.watch.state_dict()
        checkpoint.save(directory, self.model, {
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "rng": rng_state(), "position": dict(self.state),
        })  # fmt: skip

    def save_resume_point(self) -> None:
        """The record is never behind the checkpoint: every metric point logged so far is in the
        store before this checkpoint can become the point a resumed run starts from."""
        self.tracker.flush()
        supervise.fault_point("checkpoint", self.state["step"])
        self.snapshot(self.last_dir)
        best = self.state["best_step"]
        if best != self.logged_best and checkpoint.exists(self.best_dir):
            self.tracker.log_artifacts(self.best_dir, "checkpoints/best")  # the one it refers to
            self.logged_best = best
        self.tracker.log_artifacts(self.last_dir, "checkpoints/last")

    # -- one optimizer step --------------------------------------------------------------------
    def _set_trainable(self, step: int) -> None:
        if self.config.model.adapter is not None:  # peft decided: adapters and head only
            return
        lowest = lowest_trainable(self.config, len(self.groups), step)
        if lowest != self.trainable_from:  # (un)freeze only when the schedule moves
            for depth, (_, params) in enumerate(self.groups):
                for _, p in params:
                    p.requires_grad_(depth >= lowest)
            self.trainable_from = lowest

    def _backward(self, micro: list[Any], first: int) -> tuple[float, dict[str, float]]:
        """Forward and backward over the micro-batches of one step; the data's mean loss."""
        n_micro = sum(len(idx) for idx in micro)
        loss_value, logged = 0.0, {}
        for k, idx in enumerate(micro):
            batch = take(self.feats["train"], torch.as_tensor(idx))
            batch = to_device(self.augment(batch, self.state["epoch"], first + k), self.device)
            ctx = torch.autocast("cuda", self.amp_dtype) if self.use_amp else nullcontext()
            with ctx:
                logits = forward(self.model, batch)
            share = len(idx) / n_micro
            loss = loss_fn(self.config.task, logits, batch["labels"]) * share
            loss_value += loss.item()  # (train/loss: the data's, without the penalty)
            l1 = recipe.l1_penalty(self.optimizer.param_groups, self.config.optim.l1)
            if l1 is not None:
                logged["train/l1"] = l1.item()
                loss = loss + l1 * share
            self.scaler.scale(loss).backward()
        return (math.nan if self.nan_fault else loss_value), logged

    def _apply_step(self, step: int) -> tuple[float, torch.Tensor]:
        """Clip, step the optimizer and the schedule; the LR used and the gradient's norm."""
        opt = self.optimizer
        self.scaler.unscale_(opt)
        trainable = [p for p in self.model.parameters() if p.grad is not None]
        clip = self.config.train.clip_norm or math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, clip)
        factor = lr_factor(self.fault, step + 1)  # (1 but under XP_FAULT_LR)
        for g in opt.param_groups:
            g["lr"] *= factor
        lr = max(g["lr"] for g in opt.param_groups)
        self.scaler.step(opt)
        self.scaler.update()
        self.scheduler.step()
        opt.zero_grad(set_to_none=True)
        return lr, grad_norm

    # -- evaluation ----------------------------------------------------------------------------
    def _evaluate(self, step: int) -> tuple[str, str]:
        """Validation (and the training sample) at `step`: the best checkpoint, early stopping,
        the search's pruner. Returns (outcome, message); outcome "ok" goes on."""
        config, state, metric = self.config, self.state, self.config.eval.metric
        supervise.fault_point("eval", step)
        val = evaluate(self.model, self.feats["validation"], config, self.device)
        seen = {f"val/{k}": v for k, v in val.items()}
        point = {"step": step, "val_loss": val["loss"], "val": val[metric]}
        if self.sample is not None:
            on_train = evaluate(self.model, self.sample, config, self.device)
            seen.update({f"train_sample/{k}": v for k, v in on_train.items()})
            point.update(train_loss=on_train["loss"], train=on_train[metric])
        self.tracker.log_metrics(seen, step)
        state["evals"].append(point)
        self.events("eval", {"step": step, "metrics": val})
        better = improved(val[metric], state["best_value"], metric, config.eval.min_delta)
        self.alarm = self.watch.evaluation(step, better) or self.alarm
        if better:
            state.update(best_value=val[metric], best_step=step, best_val=val, bad_evals=0)
            self.snapshot(self.best_dir)
        else:
            state["bad_evals"] += 1
            if config.eval.patience and state["bad_evals"] >= config.eval.patience:
                state["outcome"] = "early_stopped"  # (a resumed run stays stopped)
                return "early_stopped", ""
        if self.should_stop is not None and self.should_stop(step, val):
            state["outcome"] = "pruned"
            return "pruned", f"pruned by the search's pruner at step {step}"
        return "ok", ""

    def _monitor_stop(self, step: int) -> tuple[str, str]:
        """A monitor rule set to `stop` fired: the rest of the compute saved."""
        alarm = self.alarm
        if alarm is None or step >= self.total:
            return "ok", ""
        self.tracker.set_tags({"xp.monitor.stopped": alarm.message})
        if alarm.kind == "stall":  # early stopping by another name: a good model
            self.state["outcome"] = "early_stopped"
            return "early_stopped", ""
        self.state["outcome"] = "failed"
        return "failed", f"stopped by the monitor: {alarm.message}"

    # -- the loop ------------------------------------------------------------------------------
    def _one_step(self, first: int, micro: list[Any], n_batches: int) -> tuple[str, str]:
        state, step = self.state, self.state["step"]
        self._set_trainable(step)
        self.model.train()
        loss_value, logged = self._backward(micro, first)
        if not math.isfinite(loss_value):
            self.watch.step(step + 1, loss_value, math.nan)
            return "failed", f"loss became {loss_value} at step {step + 1}"
        lr, grad_norm = self._apply_step(step)
        state["step"] = step = step + 1
        state["next_batch"] = first + self.config.train.grad_accum
        if state["next_batch"] >= n_batches:
            state["epoch"], state["next_batch"] = state["epoch"] + 1, 0
        norm = float(grad_norm)
        logged.update({"train/loss": loss_value, "train/lr": lr, "train/grad_norm": norm})
        self.tracker.log_metrics(logged, step)
        self.events("step", {"step": step, "total": self.total, "loss": loss_value})
        supervise.fault_point("step", step)
        skipped = self.scaler.is_enabled() and not math.isfinite(norm)  # (an fp16 overflow)
        self.alarm = self.watch.step(step, loss_value, None if skipped else norm)
        every = self.config.eval.every
        if (step % every == 0 if every else state["next_batch"] == 0) or step == self.total:
            outcome, message = self._evaluate(step)
            if outcome != "ok":
                return outcome, message
        outcome, message = self._monitor_stop(step)
        if outcome != "ok":
            return outcome, message
        if self.config.train.checkpoint_every and step % self.config.train.checkpoint_every == 0:
            self.save_resume_point()
        return "ok", ""

    def run(self) -> Result:
        state, t, tracker = self.state, self.config.train, self.tracker
        n_train = len(self.feats["train"]["labels"])
        bs, accum = t.batch_size, t.grad_accum
        self.events("fit", {"total": self.total, "step": state["step"]})
        outcome, message = state["outcome"], ""  # a run resumed after early stopping stays so
        import sklearn.metrics  # noqa: F401  (here, not at the first evaluation: the loop's clock)

        started = time.perf_counter()
        with _StopFlag() as stop:
            while state["step"] < self.total and outcome == "ok" and stop.signal is None:
                order = epoch_order(self.seeds["data_order"], state["epoch"], n_train)
                batches = [order[i : i + bs] for i in range(0, n_train, bs)]
                for first in range(state["next_batch"], len(batches), accum):
                    outcome, message = self._one_step(first, batches[first : first + accum],
                                                      len(batches))  # fmt: skip
                    if outcome != "ok" or stop.signal is not None or state["step"] >= self.total:
                        break
        tracker.flush()  # metrics are in the store before the loop's time is taken
        fit_seconds = time.perf_counter() - started
        tracker.set_tags({"xp.time.fit_seconds": f"{fit_seconds:.3f}"})  # this attempt's loop
        self.snapshot(self.last_dir)  # (after the flush: the record is never behind the checkpoint)
        if stop.signal is not None and outcome == "ok" and state["step"] < self.total:
            return self._killed(stop.signal, fit_seconds)
        self.watch.finish(state["step"])
        record_diagnosis(tracker, self.config, state, self.per_epoch,
                         0 if self.sample is None else len(self.sample["labels"]))  # fmt: skip
        result = finish(self, outcome, message)
        result.fit_seconds = fit_seconds
        return result

    def _killed(self, signum: int, fit_seconds: float) -> Result:
        """Killed: keep everything needed to resume, mark the run KILLED."""
        self.watch.close()
        self.tracker.log_artifacts(self.last_dir, "checkpoints/last")
        if checkpoint.exists(self.best_dir):
            self.tracker.log_artifacts(self.best_dir, "checkpoints/best")
        self.tracker.end("KILLED")
        name, step = signal.Signals(signum).name, self.state["step"]
        return Result(self.tracker.run_id, "killed", "KILLED", f"stopped by {name} at step "
                      f"{step}/{self.total}; resume with --resume {self.tracker.run_id}",
                      steps=step, signal=name, fit_seconds=fit_seconds)  # fmt: skip
