"""An HF `Trainer` (TRL's trainers included: they subclass it) reporting to the run xp handed it.

    from xp.integrations.hf import XpCallback

    trainer = Trainer(..., args=TrainingArguments(..., report_to="none"))
    trainer.add_callback(XpCallback())
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)   # `{resume}` from xp
    trainer.evaluate(test_set, metric_key_prefix="test")                # -> test/<metric>

What it does: the Trainer's logs become xp's names through xp's writer process (`loss` ->
`train/loss`, `learning_rate` -> `train/lr`, `grad_norm` -> `train/grad_norm`, `eval_f1` ->
`val/f1`, `test_f1` -> `test/f1`), the validation metrics of the best checkpoint as
`best/val/<m>`; each checkpoint the Trainer saves becomes the point `xp train --resume` hands back;
Ctrl-C or SIGTERM saves a checkpoint at the next step and ends the process as stopped (the run
is KILLED, resumable); a NaN or infinite loss ends it as failed; at the end the model is logged
(transformers flavor, with the tokenizer) so that `mlflow.pyfunc.load_model` and `xp promote`
work, and the best checkpoint is logged as `checkpoints/best`.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from xp.config import metrics_for
from xp.integrations.run import Run, first_indices, start

NAMES = {"loss": "train/loss", "learning_rate": "train/lr", "grad_norm": "train/grad_norm"}
PREFIXES = {"eval_": "val/", "test_": "test/"}
# the pipeline a logged model serves, by the head of its class (`GPT2LMHeadModel`, ...)
PIPELINES = (("ForSequenceClassification", "text-classification"),
             ("ForTokenClassification", "token-classification"),
             ("ForQuestionAnswering", "question-answering"),
             ("ForConditionalGeneration", "text2text-generation"),
             ("ForSeq2SeqLM", "text2text-generation"),
             ("ForCausalLM", "text-generation"), ("LMHeadModel", "text-generation"))  # fmt: skip


def pipeline_task(model: Any) -> str:
    """The transformers pipeline task of `model` (a PEFT model's base model's), for MLflow's
    transformers flavor; text classification where the class says nothing."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    name = type(base).__name__
    return next((task for head, task in PIPELINES if name.endswith(head)), "text-classification")


class XpCallback(TrainerCallback):
    """Report a `transformers.Trainer` to xp's run (see the module's docstring)."""

    def __init__(self, run: Run | None = None, log_model: bool = True):
        self.run = run or start()
        self.log_model = log_model
        self._known = set(metrics_for(self.run.handoff.task))
        self._evals: dict[int, dict[str, float]] = {}  # step -> validation metrics
        self._stopping = False

    def xp_metrics(self, logs: dict[str, Any]) -> dict[str, float]:
        """The Trainer's log entries under xp's names (others are left out). In the test set's
        evaluation (`metric_key_prefix="test"`), TRL's own metrics keep the `eval_` prefix (trl
        1.16: `eval_mean_token_accuracy` beside `test_loss`): they are the test set's. A
        generation task's perplexity is exp(loss) where the trainer does not give it."""
        testing = any(str(k).startswith("test_") for k in logs)
        out = {}
        for key, value in logs.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            if key in NAMES:
                out[NAMES[key]] = float(value)
                continue
            for prefix, ours in PREFIXES.items():
                name = key.removeprefix(prefix)
                if key.startswith(prefix) and name in self._known:
                    out[f"{'test/' if testing else ours}{name}"] = float(value)
        if "perplexity" in self._known:
            for ours in ("val/", "test/"):
                loss = out.get(f"{ours}loss")
                if loss is not None and f"{ours}perplexity" not in out and loss < 700:
                    out[f"{ours}perplexity"] = math.exp(loss)
        return out

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None,
                       train_dataloader: Any = None, **kw: Any):  # fmt: skip
        if self.run.resume_from is not None:  # the evaluations before the kill pick the best too
            self._evals.update(self.run.recorded_evals())
            return
        self.run.fingerprint(data_order=first_indices(train_dataloader), model=model)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kw: Any):
        metrics = self.xp_metrics(logs or {})
        if not metrics:
            return
        step = state.global_step
        val = {k.removeprefix("val/"): v for k, v in metrics.items() if k.startswith("val/")}
        if val:
            self._evals.setdefault(step, {}).update(val)
        self.run.log(metrics, step)  # a NaN loss ends the run here, as failed
        self._stop_if_asked(control)

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any):
        self._stop_if_asked(control)

    def _stop_if_asked(self, control: Any) -> None:
        if self.run.should_stop and not self._stopping:  # checkpoint at this step, then go
            self._stopping = True
            control.should_save = True
            control.should_training_stop = True

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            self.run.checkpoint_saved(folder)
        if self._stopping:
            if folder.is_dir():
                self.run.log_artifacts(folder, "checkpoints/last")
            self.run.stopped()

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None,
                     processing_class: Any = None, **kw: Any):  # fmt: skip
        best = self._best(state)
        if best:
            step, values = best
            self.run.log({f"best/val/{k}": v for k, v in values.items()}, step)
            self.run.set_tags({"xp.best_step": str(step)})
        if state.best_model_checkpoint and Path(state.best_model_checkpoint).is_dir():
            self.run.log_artifacts(Path(state.best_model_checkpoint), "checkpoints/best")
        if state.max_steps and state.global_step < state.max_steps:
            self.run.set_tags({"xp.outcome": "early_stopped"})
        if self.log_model and model is not None:
            if processing_class is not None:
                artifact = {"model": model, "tokenizer": processing_class}
                self.run.log_model(artifact, "transformers", task=pipeline_task(model))
            else:
                self.run.log_model(model, "pytorch")
        self.run.flush()

    def _best(self, state: Any) -> tuple[int, dict[str, float]] | None:
        """(step, validation metrics) of the best checkpoint: the Trainer's best one, else the
        best evaluation by the project's metric."""
        if not self._evals:
            return None
        step = state.best_global_step
        if not step and state.best_model_checkpoint:
            found = re.search(r"checkpoint-(\d+)$", str(state.best_model_checkpoint))
            step = int(found.group(1)) if found else None
        return self.run.best_evaluation(self._evals, step)
