"""Overfitting, from a run's evaluations: the training sample and validation measured alike.

A run evaluates a fixed sample of its training set each time it evaluates on validation
(`eval.train_sample`), so the two losses are measured the same way (eval mode, no dropout).
Overfitting is the validation loss turning up from its low while the training loss keeps
falling; the diagnosis says where (the onset: the evaluation of that low), how far it went by the
end, the generalisation gap at the kept checkpoint and at the end, and how many steps were
trained after the kept checkpoint. A repeat reads the seeds' diagnoses and suggests the patience
that would have stopped the seeds that overfit while keeping every seed's best checkpoint.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

# the validation loss at the end, over its low, above which a run overfit (it kept training loss
# falling meanwhile) and above which it overfit severely
ONSET_RISE = 0.05
SEVERE_RISE = 0.25
TAG = "xp.diagnosis."


def gap(train: float, val: float, higher_better: bool) -> float:
    """How much better the training sample scores than validation (positive = a gap)."""
    return train - val if higher_better else val - train


def diagnose(
    evals: list[dict[str, float]],
    metric: str,
    higher_better: bool,
    best_step: int | None,
    total_steps: int,
    min_delta: float = 0.0,
) -> dict[str, Any]:
    """The overfitting diagnosis of one run.

    Args:
        evals: one dict per evaluation, in order: `step`, `val_loss`, `val` (the metric), and
            where the training sample was evaluated `train_loss`, `train`.
        metric: the name of the metric that picks the checkpoint (`f1`).
        higher_better: its direction.
        best_step: the step of the kept checkpoint.
        total_steps: the steps the run trained.
        min_delta: the improvement that counts for early stopping.

    Returns:
        `verdict` (`none`, `onset`, `severe`, or `unknown` without a training sample), `text`
        (what `xp.diagnosis.overfitting` says), and its figures.
    """
    out: dict[str, Any] = {"metric": metric, "evaluations": len(evals), "steps": total_steps,
                           "best_step": best_step}  # fmt: skip
    if best_step is not None:
        out["steps_after_best"] = total_steps - best_step
        out.update(_waits(evals, higher_better, min_delta))
    measured = [e for e in evals if "train_loss" in e and math.isfinite(e["val_loss"])]
    if len(measured) < 2:
        out.update(verdict="unknown", text="unknown (no training-sample evaluations)")
        return out
    low = min(range(len(measured)), key=lambda i: measured[i]["val_loss"])
    first, end = measured[low], measured[-1]
    rise = (end["val_loss"] - first["val_loss"]) / max(abs(first["val_loss"]), 1e-12)
    train_change = (end["train_loss"] - first["train_loss"]) / max(abs(first["train_loss"]), 1e-12)
    kept = next((e for e in measured if e["step"] == best_step), None)
    out.update(
        low_step=int(first["step"]), val_loss_low=first["val_loss"], val_loss_end=end["val_loss"],
        val_loss_rise=rise, train_loss_change=train_change,
        gap_at_end=gap(end["train"], end["val"], higher_better),
        loss_gap_at_end=end["val_loss"] - end["train_loss"],
    )  # fmt: skip
    if kept is not None:
        out["gap_at_best"] = gap(kept["train"], kept["val"], higher_better)
        out["loss_gap_at_best"] = kept["val_loss"] - kept["train_loss"]
    overfit = low < len(measured) - 1 and rise > ONSET_RISE and train_change < 0
    if overfit:
        out["onset_step"] = int(first["step"])
    if not overfit:
        out.update(verdict="none", text="none")
    elif rise >= SEVERE_RISE:
        out.update(verdict="severe", text="severe")
    else:
        out.update(verdict="onset", text=f"onset at step {first['step']}")
    return out


def _waits(evals: list[dict[str, float]], higher_better: bool, min_delta: float) -> dict[str, int]:
    """Early stopping's view: the longest run of evaluations without improvement before the best
    one (a patience must exceed it to keep the best), and the evaluations after the best."""
    best, best_i, wait, longest = None, 0, 0, 0
    waits_before = 0
    for i, e in enumerate(evals):
        value = e["val"]
        better = best is None or (value > best + min_delta if higher_better
                                  else value < best - min_delta)  # fmt: skip
        if better:
            best, best_i, waits_before = value, i, longest
            wait = 0
        else:
            wait += 1
            longest = max(longest, wait)
    return {"wait_before_best": waits_before, "evals_after_best": len(evals) - 1 - best_i}


def tags(diagnosis: dict[str, Any]) -> dict[str, str]:
    """The `xp.diagnosis.*` tags of a run."""
    out = {f"{TAG}overfitting": diagnosis["text"]}
    for key in ("onset_step", "val_loss_rise", "gap_at_best", "gap_at_end", "steps_after_best",
                "wait_before_best", "evals_after_best", "eval_every", "steps"):  # fmt: skip
        if key in diagnosis:
            value = diagnosis[key]
            out[f"{TAG}{key}"] = f"{value:.4g}" if isinstance(value, float) else str(value)
    return out


def from_tags(run_tags: dict[str, str]) -> dict[str, Any]:
    """A run's diagnosis back from its tags (empty for a run recorded before diagnoses)."""
    found = {k.removeprefix(TAG): v for k, v in run_tags.items() if k.startswith(TAG)}
    if "overfitting" not in found:
        return {}
    out: dict[str, Any] = {"text": found.pop("overfitting")}
    out["verdict"] = out["text"].split(" ", 1)[0] if out["text"] != "none" else "none"
    for key, value in found.items():
        try:
            out[key] = int(value)
        except ValueError:
            try:
                out[key] = float(value)
            except ValueError:
                out[key] = value
    return out


def over_seeds(diagnoses: list[dict[str, Any]]) -> dict[str, Any]:
    """A repeat's view: how many seeds overfit, their median onset, and the patience that
    would have stopped them while keeping every seed's best checkpoint.

    Args:
        diagnoses: each seed's diagnosis (`from_tags`); seeds without one are not counted.
    """
    known = [d for d in diagnoses if d.get("verdict") in ("none", "onset", "severe")]
    overfit = [d for d in known if d["verdict"] != "none"]
    out: dict[str, Any] = {"seeds": len(known), "overfit": len(overfit),
                           "severe": sum(d["verdict"] == "severe" for d in overfit)}  # fmt: skip
    if overfit:
        out["median_onset_step"] = statistics.median(d["onset_step"] for d in overfit)
    waits = [d for d in diagnoses if "wait_before_best" in d and "evals_after_best" in d]
    if waits and overfit:
        patience = max(d["wait_before_best"] for d in waits) + 1
        stopped = [d for d in waits if d["evals_after_best"] > patience]
        out["patience"] = patience
        out["patience_stops"] = len(stopped)
        if all("eval_every" in d and "steps" in d for d in waits):
            out["steps_saved"] = sum((d["evals_after_best"] - patience) * d["eval_every"]
                                     for d in stopped)  # fmt: skip
            out["steps_total"] = sum(d["steps"] for d in waits)
    return out


def sentence(view: dict[str, Any]) -> str:
    """One line for a report: `2 of 5 seeds overfit (median onset step 60); ...`."""
    if not view.get("seeds"):
        return (
            "no seed has an overfitting diagnosis (runs older than xp's diagnosis, script "
            "projects' runs, or eval.train_sample=0)"
        )
    text = f"{view['overfit']} of {view['seeds']} seeds overfit"
    if view["overfit"]:
        text += f" ({view['severe']} severely; median onset at step {view['median_onset_step']:g})"
    if "patience" in view:
        text += (
            f"; eval.patience={view['patience']} would have stopped {view['patience_stops']} "
            "seeds early, each after its best checkpoint"
        )
        if view.get("steps_saved"):
            text += f", saving {view['steps_saved']} of {view['steps_total']} steps"
    return text
