"""The end of a run: test the kept checkpoint, compare with the trivial baseline, measure
forgetting, analyse the errors, log the model, close."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from xp.config import Config, metrics_for
from xp.record import supervise
from xp.record.track import Tracker
from xp.train import adapter, checkpoint, evaluation, retention
from xp.train.data import extra_test_names
from xp.train.evaluation import evaluate, logits_of
from xp.train.metrics import trivial_baseline
from xp.train.result import Result, improved


def finish(fit: Any, outcome: str, message: str) -> Result:
    """Close a run whose loop (`xp.train.fit.Fit`, passed as `fit`) ended, not killed, with
    `outcome`."""
    config, tracker, state = fit.config, fit.tracker, fit.state
    tracker.log_artifacts(fit.last_dir, "checkpoints/last")
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

    model, device, splits = fit.model, fit.device, fit.splits
    checkpoint.load_weights(fit.best_dir, model)
    tracker.log_artifacts(fit.best_dir, "checkpoints/best")
    test_logits, test_loss = logits_of(model, fit.feats["test"], config, device)  # once, for all
    test = evaluation.scores_of(test_logits, test_loss, fit.feats["test"], config.task)
    baseline = trivial_baseline(
        config.task, splits["train"].targets, splits["test"].targets, config.model.num_labels
    )
    final = {f"test/{k}": v for k, v in test.items()}
    extra = {name.split(":", 1)[1]: evaluate(model, fit.feats[name], config, device)
             for name in extra_test_names(splits)}  # fmt: skip
    final.update({f"test:{n}/{k}": v for n, metrics in extra.items() for k, v in metrics.items()})
    final.update({f"best/val/{k}": v for k, v in state["best_val"].items()})
    final.update({f"baseline/test/{k}": v for k, v in baseline.items()})
    tracker.log_metrics(final, state["step"])
    retention.record_after(tracker, fit.kept, model, device, config.eval.batch_size, state["step"])
    evaluation.record_errors(tracker, model, fit.tokenizer, fit.feats["test"],
                             splits["test"].inputs, config, device, test_logits)  # fmt: skip
    if tracker.enabled:  # what `xp ensemble` averages, with the test file it answered
        md5 = tracker.tags().get("xp.data.test.md5", "")
        evaluation.record_predictions(tracker, test_logits, fit.feats["test"], config.task, md5)
    tracker.flush()  # the final metrics are recorded before the slow part, the model
    metric = config.eval.metric
    primary = metric if metric in baseline else metrics_for(config.task)[-1]
    if not improved(test[primary], baseline[primary], primary, 0.0):
        outcome = "failed"
        message = (
            f"test/{primary}={test[primary]:.4f} is no better than the trivial baseline "
            f"({baseline[primary]:.4f})"
        )
    if config.model.adapter is not None:  # the merged model must answer as the adapter does
        diff = adapter.merge_check(model, fit.feats["validation"],
                                   lambda m, f: logits_of(m, f, config, device)[0])  # fmt: skip
        tracker.log_metrics({"adapter/merge_max_diff": diff}, state["step"])
        tol = config.eval.merge_tolerance
        tracker.set_tags({"xp.adapter.merge_check": "ok" if diff <= tol else "failed"})
        if diff > tol:  # (said first: the model that would be served is not the one tested)
            said = (f"merge check: the merged model's outputs differ from the adapter model's "
                    f"by {diff:.3g} > eval.merge_tolerance={tol:g}")  # fmt: skip
            message = said + (f"; {message}" if outcome == "failed" else "")
            outcome = "failed"
    log_model(tracker, model, fit.tokenizer, config, splits, fit.base)
    status = "FAILED" if outcome == "failed" else "FINISHED"
    tags = {"xp.outcome": outcome, "xp.best_step": str(state["best_step"])}
    if message:
        tags["xp.failure"] = message
    tracker.set_tags(tags)
    tracker.end(status)
    return Result(tracker.run_id, outcome, status, message, test=test, best_val=state["best_val"],
                  baseline=baseline, steps=state["step"], extra_tests=extra)  # fmt: skip


def log_model(
    tracker: Tracker,
    model: torch.nn.Module,
    tokenizer: Any,
    config: Config,
    splits: dict[str, Any],
    base: dict[str, Any] | None = None,
) -> None:
    if not tracker.enabled:
        return
    model.to("cpu").eval()
    supervise.fault_point("log_model")
    if base is not None:  # the adapter alone, and the base's identity (xp/train/served.py)
        import tempfile
        from pathlib import Path

        from xp.train.served import AdapterTextModel

        with tempfile.TemporaryDirectory() as tmp:
            folder = adapter.save(
                model, tokenizer, base, config.data.max_length, Path(tmp) / "adapter"
            )  # (its name in the logged model)
            tracker.log_model(AdapterTextModel(), "pyfunc", artifacts={"adapter": str(folder)},
                              extra_packages=("transformers", "tokenizers", "peft"))  # fmt: skip
        return
    if tokenizer is not None:
        task = "text-classification"
        tracker.log_model({"model": model, "tokenizer": tokenizer}, "transformers", task=task)
        return
    example = np.asarray(splits["test"].inputs[:2], dtype=np.float32)
    if config.task == "classification":  # answers labels and probabilities, not logits
        from xp.record.ops import Build

        names = config.data.label_names or [str(i) for i in range(config.model.num_labels)]
        served = Build("xp.train.served:LabelledClassifier", model, names)  # (made by the writer)
        tracker.log_model(served, "pyfunc", input_example=example)
        return
    tracker.log_model(model, "pytorch", input_example=example)
