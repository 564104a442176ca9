"""How a training run is measured: loss and metrics on a split, the same on a fixed sample of the
training set, and the overfitting diagnosis read from those evaluations at the end."""

from __future__ import annotations

import html
import json
from typing import Any

import numpy as np
import torch

from xp.config import Config, higher_is_better
from xp.diagnose import errors, overfitting
from xp.train import attribution
from xp.train.data import take
from xp.train.metrics import task_metrics
from xp.train.models import forward

SAMPLE_SEED = 0  # the training sample is the same for every seed of every configuration


def loss_fn(task: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for classification, mean squared error for regression."""
    if task == "classification":
        return torch.nn.functional.cross_entropy(logits.float(), labels)
    return torch.nn.functional.mse_loss(logits.float().squeeze(-1), labels.float())


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def logits_of(
    model: torch.nn.Module, features: dict[str, Any], config: Config, device: torch.device
) -> tuple[torch.Tensor, float]:
    """The model's outputs on one split, and its mean loss (model in eval mode: no dropout)."""
    model.eval()
    n = len(features["labels"])
    logits_all, loss_sum = [], 0.0
    for start in range(0, n, config.eval.batch_size):
        batch = to_device(take(features, slice(start, start + config.eval.batch_size)), device)
        logits = forward(model, batch)
        loss_sum += loss_fn(config.task, logits, batch["labels"]).item() * len(batch["labels"])
        logits_all.append(logits.float().cpu())
    return torch.cat(logits_all), loss_sum / n


def evaluate(
    model: torch.nn.Module, features: dict[str, Any], config: Config, device: torch.device
) -> dict[str, float]:
    """Loss and task metrics on one split (model in eval mode: no dropout)."""
    return scores_of(*logits_of(model, features, config, device), features, config.task)


def scores_of(
    logits: torch.Tensor, loss: float, features: dict[str, Any], task: str
) -> dict[str, float]:
    """Loss and task metrics from a split's outputs (`logits_of`)."""
    if task == "classification":
        preds = logits.argmax(-1).numpy()
    else:
        preds = logits.squeeze(-1).numpy()
    out = {"loss": loss}
    out.update(task_metrics(task, features["labels"].numpy(), preds))
    return out


PREDICTIONS = "predictions/test.npz"  # what `xp ensemble` averages over a repeat's seeds


def record_predictions(
    tracker: Any, logits: torch.Tensor, features: dict[str, Any], task: str, md5: str
) -> None:
    """The kept checkpoint's test answers, `predictions/test.npz`: `probs` [n, classes] (softmax,
    float32) or `pred` [n] (regression), `labels`, and `md5`, the test file's DVC md5."""
    if not tracker.enabled:
        return
    import tempfile
    from pathlib import Path

    if task == "classification":
        answers = {"probs": torch.softmax(logits, -1).numpy().astype(np.float32)}
    else:
        answers = {"pred": logits.squeeze(-1).numpy().astype(np.float32)}
    with tempfile.TemporaryDirectory() as tmp:
        folder, name = PREDICTIONS.rsplit("/", 1)
        np.savez(Path(tmp) / name, labels=features["labels"].numpy(), md5=np.array(md5 or ""),
                 **answers)  # fmt: skip
        tracker.log_artifacts(Path(tmp), folder)


def fixed_sample(train: dict[str, Any], size: int | None, n_val: int) -> dict[str, Any] | None:
    """`size` training rows (None: `n_val`, the validation set's size) drawn once by a fixed
    generator (all of them if fewer), in file order; None when `eval.train_sample` is 0. It
    draws from no generator a seed feeds."""
    n = len(train["labels"])
    size = n_val if size is None else size
    if size <= 0 or n == 0:
        return None
    rows = np.sort(np.random.default_rng(SAMPLE_SEED).permutation(n)[: min(size, n)])
    return take(train, torch.as_tensor(rows))


def record_diagnosis(
    tracker: Any, config: Config, state: dict[str, Any], steps_per_epoch: int, sample_size: int
) -> dict[str, Any]:
    """The overfitting diagnosis of a finished run: `xp.diagnosis.*` tags and
    `diagnosis/overfitting.json`."""
    metric = config.eval.metric
    found = overfitting.diagnose(
        state["evals"], metric, higher_is_better(metric), state["best_step"], state["step"],
        config.eval.min_delta,
    )  # fmt: skip
    found["eval_every"] = config.eval.every or steps_per_epoch
    tracker.set_tags(overfitting.tags(found))
    record = {**found, "evaluations": state["evals"], "train_sample": sample_size}
    tracker.log_text(json.dumps(record, indent=1), "diagnosis/overfitting.json")
    return found


ATTRIBUTED = 10  # wrong test texts whose tokens are attributed (Captum), the most confident first


def record_errors(
    tracker: Any,
    model: torch.nn.Module,
    tokenizer: Any,
    test: dict[str, Any],
    inputs: Any,
    config: Config,
    device: torch.device,
    logits: torch.Tensor | None = None,
) -> dict[str, Any] | None:
    """Error analysis of the kept checkpoint on the test set (classification): `errors/errors.json`
    (the confusion matrix, per-class errors, every wrong index, the most confident wrong examples
    with their inputs: the text, or an image's pixels), `errors/confusion.png`, and either
    `errors/wrong.png` (the wrong images) or `errors/attributions.html` (which words drove each
    of the first wrong texts, Captum's integrated gradients)."""
    if config.task != "classification" or not tracker.enabled:
        return None
    import tempfile
    from pathlib import Path

    if logits is None:  # (the caller may have them already: no second pass over the test set)
        logits, _ = logits_of(model, test, config, device)
    probs = torch.softmax(logits, -1).numpy()
    y_true, y_pred = test["labels"].numpy(), probs.argmax(-1)
    texts = tokenizer is not None
    found = errors.run_errors(y_true, y_pred, probs, list(inputs) if texts else None,
                              config.data.label_names)  # fmt: skip
    found["wrong_indices"] = [int(i) for i in np.flatnonzero(y_true != y_pred)]
    names = found["labels"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        errors.plot_confusion(np.asarray(found["confusion"]), names, out / "confusion.png")
        wrong = found["wrong"]
        if texts:
            shown = wrong[:ATTRIBUTED]
            scores = attribution.token_attributions(
                model, tokenizer, [w["input"] for w in shown], [w["predicted"] for w in shown],
                device, config.data.max_length)  # fmt: skip
            rows = []
            for w, s in zip(shown, scores, strict=True):
                w["attributions"] = [[t, round(v, 4)] for t, v in s]
                rows.append(f"<p><b>#{w['index']}</b> {html.escape(names[w['label']])} -> "
                            f"{html.escape(names[w['predicted']])} ({w['confidence']:.2f}): "
                            f"{attribution.to_html(s)}</p>")  # fmt: skip
            (out / "attributions.html").write_text(
                "<meta charset='utf-8'><h3>Which words drove each wrong answer (red: towards the "
                "predicted class)</h3>" + "\n".join(rows))  # fmt: skip
        else:
            arrays = np.asarray(inputs)
            for w in wrong:
                w["input"] = arrays[w["index"]].tolist()
            errors.plot_images([arrays[w["index"]] for w in wrong],
                               [f"#{w['index']} {names[w['label']]}->{names[w['predicted']]}"
                                for w in wrong], out / "wrong.png",
                               "test images it got wrong (most confident first)")  # fmt: skip
        (out / "errors.json").write_text(json.dumps(found, indent=1))
        tracker.log_artifacts(out, "errors")
    tracker.set_tags({"xp.errors.wrong": str(found["n_wrong"])})
    return found
