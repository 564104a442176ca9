"""The fine-tuning recipe, top to bottom: setup -> loop -> evaluate -> checkpoint -> finish.

One explicit loop, no callback framework. Fine-tuning practice lives here: AdamW without weight
decay on biases and norm weights, warm-up then linear/cosine decay, gradient clipping (the norm
is logged), freezing and gradual unfreezing, layer-wise LR decay, gradient accumulation, early
stopping on a validation metric keeping the best checkpoint, autocast on a GPU, and a seed per
source of randomness. A run killed by Ctrl-C or SIGTERM saves its last checkpoint and resumes
exactly (`--resume <run_id>`).
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xp import XpError
from xp.config import Config, higher_is_better, metrics_for
from xp.diagnose import audit
from xp.record import numerics, supervise
from xp.record import tags as record
from xp.record.track import Tracker, start_tracker
from xp.record.workspace import Workspace
from xp.train import checkpoint, evaluation, fingerprint, recipe, retention
from xp.train.data import load_splits, take, to_tensors
from xp.train.data_audit import audit_splits, record_audit
from xp.train.devices import device_label, pick_device
from xp.train.evaluation import evaluate, fixed_sample, loss_fn, record_diagnosis, to_device
from xp.train.metrics import trivial_baseline
from xp.train.models import build_model, forward, layer_groups
from xp.train.monitoring import Watch, check_notify, lr_factor, lr_fault
from xp.train.recipe import check_layers, lowest_trainable, param_groups, total_steps
from xp.train.resume import claim
from xp.train.seed import derive_seeds, epoch_order, rng_state, set_deterministic, set_rng_state


class DivergedError(XpError):
    """The loss became NaN or infinite."""


@dataclass
class Result:
    """What a training job ended with."""

    run_id: str
    outcome: str  # ok | failed | early_stopped | pruned | killed
    status: str  # MLflow status: FINISHED | FAILED | KILLED
    message: str = ""
    test: dict[str, float] = field(default_factory=dict)
    best_val: dict[str, float] = field(default_factory=dict)
    baseline: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    signal: str = ""  # SIGINT / SIGTERM for a killed run
    fit_seconds: float = 0.0  # wall time of the training loop alone (benchmarks compare this)


Events = Callable[[str, dict[str, Any]], None]
StopHook = Callable[[int, dict[str, float]], bool]  # (step, validation metrics) -> stop now?


def _no_events(kind: str, info: dict[str, Any]) -> None:
    pass


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


def _improved(value: float, best: float | None, metric: str, min_delta: float) -> bool:
    if best is None:
        return True
    if higher_is_better(metric):
        return value > best + min_delta
    return value < best - min_delta


# -- the job ----------------------------------------------------------------------------------
def train(
    config: Config,
    workspace: Workspace | Path,
    *,
    overrides: list[str] | None = None,
    track: bool = True,
    resume: str | None = None,
    group: str | None = None,
    events: Events = _no_events,
    should_stop: StopHook | None = None,
) -> Result:
    """Run one fine-tuning job and record it.

    Args:
        config: the validated config.
        workspace: the repository it runs in, or its root (data paths are relative to it).
        overrides: the `key=value` overrides the user gave (recorded in `xp.command`).
        track: False for the null tracker (`--no-track`).
        resume: run id of a killed run to continue in place.
        group: the parent repeat run's id: this run is one of its seeds.
        events: callback for progress (`start`, `step`, `eval`, `end`); the CLI draws it.
        should_stop: asked after each evaluation with (step, validation metrics); True ends the
            run as `pruned` (a search's pruner hands one to its trials).

    Returns:
        The outcome, final metrics and run id.

    Raises:
        XpError: missing data, a bad model name, an unknown resume id.
    """
    # ---- setup: everything that can fail for a user reason fails before the store changes
    seeds = derive_seeds(config.seed.master, config.seed.model_dump(exclude={"master"}))
    supervise.training_seed(config.seed.master)
    t = config.train
    if resume and not track:
        raise XpError("--resume needs tracking: the run to continue lives in the store")
    device = pick_device(t.device)
    check_notify(config.monitor)  # (a notify command that cannot run: one line, before anything)
    lr_fault()
    if track:  # the metric writer imports MLflow while the model loads, not during the loop
        from xp.record.store import configure_store
        from xp.record.track import start_writer

        start_writer(training=True)
    if t.numerics != numerics.current():  # (a library caller that imported torch first)
        numerics.apply(t.numerics)
    if t.threads:
        torch.set_num_threads(t.threads)
    set_deterministic(t.deterministic)
    numerics.pin_torch(t.numerics)  # portable: one thread, deterministic, whatever else says
    workspace = Workspace.of(workspace)
    root = workspace.root
    model, tokenizer, source = build_model(config, root, seeds["init"])
    check_layers(config, model)
    model.to(device)
    init_print = fingerprint.of_params(model)  # (before a resumed run's weights are loaded)
    prov = record.gather(
        config, workspace, (source["kind"], source["location"]), device_label(device)
    )
    skipped = record.skipped_summary(prov.git)
    if skipped:
        events("warning", {"message": skipped})
    splits = load_splits(config, root, prov.data)
    audited, not_audited = audit_splits(config, workspace, prov.data, splits)
    said = audit.warning(audited) if audited else None
    if said:
        events("warning", {"message": said})
    feats = {n: to_tensors(s, tokenizer, config.data.max_length) for n, s in splits.items()}
    kept = retention.prepare(config, root, model, tokenizer, feats["validation"], device)
    with torch.random.fork_rng(devices=[]):  # the generator dropout will draw from, untouched
        torch.manual_seed(seeds["dropout"])
        dropout_print = fingerprint.of_rng()
    prints = fingerprint.tags(
        data_order=fingerprint.of_order(epoch_order(seeds["data_order"], 0, len(splits["train"]))),
        init=init_print, dropout=dropout_print,
    )  # fmt: skip
    if track:
        configure_store(workspace)  # (a store that cannot be opened is one line, and no run)

    tags = record.training_tags(config, prov, workspace, overrides or [], group)
    tags["xp.model.source"] = f"{source['kind']}:{source['location']}"
    lock, saved, recorded = None, None, {}
    if resume:  # every check before the run is reopened: a refusal leaves it as it was
        recorded, lock, saved = claim(workspace, resume, config.project, tags, model)
        tags = {}  # the reopened run keeps its own provenance: none of it is overwritten
    rewrite = not resume or "xp.recorded" not in recorded  # (killed while it was written)
    tracker = start_tracker(track, config.project, workspace, resume_run_id=resume, tags=tags)
    if lock is None and track:
        lock = supervise.try_lock(workspace, tracker.run_id)
    with supervise.closed_on_error(tracker, lock):
        if resume:
            tracker.skip_recorded_points()  # a replayed step is not logged twice
        if rewrite:
            record.write(tracker, config, seeds, prov)
            tracker.set_tags(prints)
            record_audit(tracker, audited, not_audited)
        retention.record_before(tracker, kept)
        events("start", {"run_id": tracker.run_id, "tracking": tracker.enabled})
        supervise.fault_point("setup")
        return _fit(config, workspace, model, tokenizer, feats, splits, seeds, device, tracker,
                    saved, events, should_stop, kept)  # fmt: skip


def _fit(
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
) -> Result:
    t, ev = config.train, config.eval
    work = workspace.run_dir(tracker.run_id) / "checkpoints"
    best_dir, last_dir = work / "best", work / "last"
    groups = layer_groups(model)
    optimizer = recipe.build_optimizer(param_groups(model, config), config)
    per_epoch, total = total_steps(config, len(splits["train"]))
    from transformers.optimization import get_scheduler

    schedule_name = {"constant": "constant_with_warmup"}.get(
        config.schedule.decay, config.schedule.decay
    )
    scheduler = get_scheduler(
        schedule_name, optimizer, num_warmup_steps=int(config.schedule.warmup * total),
        num_training_steps=total,
    )  # fmt: skip
    use_amp = device.type == "cuda" and t.precision != "fp32"
    amp_dtype = torch.bfloat16 if t.precision == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and t.precision == "fp16")

    # position and early-stopping state; a resumed run takes them from its last checkpoint
    state: dict[str, Any] = {"step": 0, "epoch": 0, "next_batch": 0, "best_value": None,
                             "best_step": None, "best_val": {}, "bad_evals": 0,
                             "outcome": "ok", "evals": [], "monitor": None}  # fmt: skip
    torch.manual_seed(seeds["dropout"])  # from here on the global RNG only feeds dropout
    if saved is not None:  # the weights are already in the model
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        set_rng_state(saved["rng"])
        state.update(saved["position"])
    if tracker.resumed:
        tracker.set_tags({"xp.resumed_at_step": str(state["step"])})
    warmup_steps = int(config.schedule.warmup * total)
    say = lambda message: events("warning", {"message": message})  # noqa: E731
    watch = Watch(config.monitor, tracker, work.parent, warmup_steps, say, state["monitor"])
    sample = fixed_sample(feats["train"], ev.train_sample, len(feats["validation"]["labels"]))
    fault = lr_fault()

    def snapshot(directory: Path) -> None:
        state["monitor"] = watch.state_dict()
        checkpoint.save(directory, model, {
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "rng": rng_state(), "position": dict(state),
        })  # fmt: skip

    logged_best = [state["best_step"] if saved is not None else None]

    def save_resume_point() -> None:
        """The record is never behind the checkpoint: every metric point logged so far is in the
        store before this checkpoint can become the point a resumed run starts from."""
        tracker.flush()
        supervise.fault_point("checkpoint", state["step"])
        snapshot(last_dir)
        if state["best_step"] != logged_best[0] and checkpoint.exists(best_dir):
            tracker.log_artifacts(best_dir, "checkpoints/best")  # the best one it refers to
            logged_best[0] = state["best_step"]
        tracker.log_artifacts(last_dir, "checkpoints/last")

    metric = ev.metric
    # fault injection, to test failure handling end to end: XP_FAULT_NAN_SEEDS=2,5
    nan_fault = str(config.seed.master) in os.environ.get("XP_FAULT_NAN_SEEDS", "").split(",")
    n_train = len(feats["train"]["labels"])
    bs, accum = t.batch_size, t.grad_accum
    events("fit", {"total": total, "step": state["step"]})
    outcome, message = state["outcome"], ""  # a run resumed after early stopping stays stopped
    trainable_from = None
    import sklearn.metrics  # noqa: F401  (here, not at the first evaluation: the clock is the loop's)

    started = time.perf_counter()
    with _StopFlag() as stop:
        while state["step"] < total and outcome == "ok":
            order = epoch_order(seeds["data_order"], state["epoch"], n_train)
            batches = [order[i : i + bs] for i in range(0, n_train, bs)]
            for first in range(state["next_batch"], len(batches), accum):
                step = state["step"]
                lowest = lowest_trainable(config, len(groups), step)
                if lowest != trainable_from:  # (un)freeze only when the schedule moves
                    for depth, (_, params) in enumerate(groups):
                        for _, p in params:
                            p.requires_grad_(depth >= lowest)
                    trainable_from = lowest
                model.train()
                micro = batches[first : first + accum]
                n_micro = sum(len(idx) for idx in micro)
                loss_value, logged = 0.0, {}
                for idx in micro:
                    batch = to_device(take(feats["train"], torch.as_tensor(idx)), device)
                    ctx = torch.autocast("cuda", amp_dtype) if use_amp else nullcontext()
                    with ctx:
                        logits = forward(model, batch)
                    loss = loss_fn(config.task, logits, batch["labels"]) * (len(idx) / n_micro)
                    loss_value += loss.item()  # (train/loss: the data's, without the penalty)
                    l1 = recipe.l1_penalty(optimizer.param_groups, config.optim.l1)
                    if l1 is not None:
                        logged["train/l1"] = l1.item()
                        loss = loss + l1 * (len(idx) / n_micro)
                    scaler.scale(loss).backward()
                if nan_fault:
                    loss_value = math.nan
                if not math.isfinite(loss_value):
                    watch.step(step + 1, loss_value, math.nan)
                    outcome, message = "failed", f"loss became {loss_value} at step {step + 1}"
                    break
                scaler.unscale_(optimizer)
                trainable = [p for p in model.parameters() if p.grad is not None]
                grad_norm = torch.nn.utils.clip_grad_norm_(trainable, t.clip_norm or math.inf)
                factor = lr_factor(fault, step + 1)  # (1 but under XP_FAULT_LR)
                for g in optimizer.param_groups:
                    g["lr"] *= factor
                lr = max(g["lr"] for g in optimizer.param_groups)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state["step"] = step = step + 1
                state["next_batch"] = first + accum
                if state["next_batch"] >= len(batches):
                    state["epoch"], state["next_batch"] = state["epoch"] + 1, 0
                logged.update({"train/loss": loss_value, "train/lr": lr,
                               "train/grad_norm": float(grad_norm)})  # fmt: skip
                tracker.log_metrics(logged, step)
                events("step", {"step": step, "total": total, "loss": loss_value})
                supervise.fault_point("step", step)
                norm = float(grad_norm)  # (an fp16 overflow the scaler skipped: nothing to judge)
                skipped = scaler.is_enabled() and not math.isfinite(norm)
                alarm = watch.step(step, loss_value, None if skipped else norm)

                end_of_epoch = state["next_batch"] == 0
                due = step % ev.every == 0 if ev.every else end_of_epoch
                if due or step == total:
                    supervise.fault_point("eval", step)
                    val = evaluate(model, feats["validation"], config, device)
                    seen = {f"val/{k}": v for k, v in val.items()}
                    point = {"step": step, "val_loss": val["loss"], "val": val[metric]}
                    if sample is not None:
                        on_train = evaluate(model, sample, config, device)
                        seen.update({f"train_sample/{k}": v for k, v in on_train.items()})
                        point.update(train_loss=on_train["loss"], train=on_train[metric])
                    tracker.log_metrics(seen, step)
                    state["evals"].append(point)
                    events("eval", {"step": step, "metrics": val})
                    improved = _improved(val[metric], state["best_value"], metric, ev.min_delta)
                    alarm = watch.evaluation(step, improved) or alarm
                    if improved:
                        state.update(best_value=val[metric], best_step=step, best_val=val,
                                     bad_evals=0)  # fmt: skip
                        snapshot(best_dir)
                    else:
                        state["bad_evals"] += 1
                        if ev.patience and state["bad_evals"] >= ev.patience:
                            outcome = state["outcome"] = "early_stopped"
                            break
                    if should_stop is not None and should_stop(step, val):
                        outcome = state["outcome"] = "pruned"
                        message = f"pruned by the search's pruner at step {step}"
                        break
                if alarm is not None and step < total:  # a rule set to `stop`: the rest saved
                    tracker.set_tags({"xp.monitor.stopped": alarm.message})
                    if alarm.kind == "stall":  # early stopping by another name: a good model
                        outcome = state["outcome"] = "early_stopped"
                    else:
                        outcome = state["outcome"] = "failed"
                        message = f"stopped by the monitor: {alarm.message}"
                    break
                if t.checkpoint_every and step % t.checkpoint_every == 0:
                    save_resume_point()
                if stop.signal is not None or step >= total:
                    break
            if stop.signal is not None:
                break
    tracker.flush()  # metrics are in the store before the loop's time is taken
    fit_seconds = time.perf_counter() - started
    tracker.set_tags({"xp.time.fit_seconds": f"{fit_seconds:.3f}"})  # this attempt's loop
    snapshot(last_dir)  # (after the flush: the record is never behind the checkpoint)

    if stop.signal is not None and outcome == "ok" and state["step"] < total:
        # killed: keep everything needed to resume, mark the run KILLED
        watch.close()
        tracker.log_artifacts(last_dir, "checkpoints/last")
        if checkpoint.exists(best_dir):
            tracker.log_artifacts(best_dir, "checkpoints/best")
        tracker.end("KILLED")
        name = signal.Signals(stop.signal).name
        return Result(tracker.run_id, "killed", "KILLED", f"stopped by {name} at step "
                      f"{state['step']}/{total}; resume with --resume {tracker.run_id}",
                      steps=state["step"], signal=name, fit_seconds=fit_seconds)  # fmt: skip

    watch.finish(state["step"])
    record_diagnosis(tracker, config, state, per_epoch,
                     0 if sample is None else len(sample["labels"]))  # fmt: skip
    result = _finish(config, model, tokenizer, feats, splits, device, tracker, state, outcome,
                     message, best_dir, last_dir, kept)  # fmt: skip
    result.fit_seconds = fit_seconds
    return result


def _finish(
    config: Config,
    model: torch.nn.Module,
    tokenizer: Any,
    feats: dict[str, dict[str, Any]],
    splits: dict[str, Any],
    device: torch.device,
    tracker: Tracker,
    state: dict[str, Any],
    outcome: str,
    message: str,
    best_dir: Path,
    last_dir: Path,
    kept: retention.Retention,
) -> Result:
    """Test the best checkpoint, compare with the trivial baseline, measure forgetting, log the
    model, close."""
    tracker.log_artifacts(last_dir, "checkpoints/last")
    if outcome == "failed":  # diverged: no model worth testing
        tracker.set_tags({"xp.outcome": "failed", "xp.failure": message})
        tracker.end("FAILED")
        return Result(tracker.run_id, "failed", "FAILED", message, steps=state["step"])
    if outcome == "pruned":  # a search trial stopped early: a result, never tested or ranked
        tracker.set_tags({"xp.outcome": "pruned", "xp.pruned_at_step": str(state["step"]),
                          "xp.best_step": str(state["best_step"])})  # fmt: skip
        tracker.log_metrics({f"best/val/{k}": v for k, v in state["best_val"].items()},
                            state["step"])  # fmt: skip
        tracker.end("FINISHED")
        return Result(tracker.run_id, "pruned", "FINISHED", message, steps=state["step"],
                      best_val=state["best_val"])  # fmt: skip

    checkpoint.load_weights(best_dir, model)
    tracker.log_artifacts(best_dir, "checkpoints/best")
    test = evaluate(model, feats["test"], config, device)
    metric = config.eval.metric
    baseline = trivial_baseline(
        config.task, splits["train"].targets, splits["test"].targets, config.model.num_labels
    )
    final = {f"test/{k}": v for k, v in test.items()}
    final.update({f"best/val/{k}": v for k, v in state["best_val"].items()})
    final.update({f"baseline/test/{k}": v for k, v in baseline.items()})
    tracker.log_metrics(final, state["step"])
    retention.record_after(tracker, kept, model, device, config.eval.batch_size, state["step"])
    evaluation.record_errors(tracker, model, tokenizer, feats["test"], splits["test"].inputs,
                             config, device)  # fmt: skip
    tracker.flush()  # the final metrics are recorded before the slow part, the model
    primary = metric if metric in baseline else metrics_for(config.task)[-1]
    if not _improved(test[primary], baseline[primary], primary, 0.0):
        outcome = "failed"
        message = (
            f"test/{primary}={test[primary]:.4f} is no better than the trivial baseline "
            f"({baseline[primary]:.4f})"
        )
    _log_model(tracker, model, tokenizer, config, splits, device)
    status = "FAILED" if outcome == "failed" else "FINISHED"
    tags = {"xp.outcome": outcome, "xp.best_step": str(state["best_step"])}
    if message:
        tags["xp.failure"] = message
    tracker.set_tags(tags)
    tracker.end(status)
    return Result(tracker.run_id, outcome, status, message, test=test,
                  best_val=state["best_val"], baseline=baseline, steps=state["step"])  # fmt: skip


def _log_model(
    tracker: Tracker,
    model: torch.nn.Module,
    tokenizer: Any,
    config: Config,
    splits: dict[str, Any],
    device: torch.device,
) -> None:
    if not tracker.enabled:
        return
    model.to("cpu").eval()
    supervise.fault_point("log_model")
    if tokenizer is not None:
        task = "text-classification"
        tracker.log_model({"model": model, "tokenizer": tokenizer}, "transformers", task=task)
        return
    example = np.asarray(splits["test"].inputs[:2], dtype=np.float32)
    tracker.log_model(model, "pytorch", input_example=example)
