"""A small CNN on the digits 5-9, trained from scratch by a plain PyTorch loop.

The xp lines: `run = start()` (the run xp handed this process, or a new one when the script runs
on its own), `run.seeds` (one seed per source of randomness), `run.log`, `run.save_checkpoint` /
`run.load_checkpoint` (exact resume), `run.should_stop` (Ctrl-C, SIGTERM), `run.log_model` and
`run.finish`. Run on its own: `python projects/digits_loop/train.py --data data/digits`.
"""

import argparse

import numpy as np
import torch
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from xp.integrations import start


class SmallCNN(torch.nn.Module):
    def __init__(self, classes: int = 5, dropout: float = 0.2):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        )  # fmt: skip
        self.head = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Dropout(dropout), torch.nn.Linear(32 * 4 * 4, classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def load(path: str) -> tuple[torch.Tensor, torch.Tensor]:
    data = np.load(path)
    return torch.from_numpy(data["X"]).unsqueeze(1) / 16.0, torch.from_numpy(data["y"])


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    model.eval()
    logits = model(x)
    predicted = logits.argmax(-1).numpy()
    p, r, f1, _ = precision_recall_fscore_support(y.numpy(), predicted, average="macro",
                                                  zero_division=0)  # fmt: skip
    loss = torch.nn.functional.cross_entropy(logits, y).item()
    return {"loss": loss, "accuracy": accuracy_score(y.numpy(), predicted), "precision": p,
            "recall": r, "f1": f1}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/digits")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--dropout", type=float, default=0.2)
    args = ap.parse_args()

    run = start()
    x, y = load(f"{args.data}/train.npz")
    val_x, val_y = load(f"{args.data}/validation.npz")
    torch.manual_seed(run.seeds["init"])  # the weights
    model = SmallCNN(dropout=args.dropout)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    order = np.random.default_rng(run.seeds["data_order"])  # the order of the examples
    torch.manual_seed(run.seeds["dropout"])  # from here on torch's generator only feeds dropout
    run.fingerprint(data_order=np.random.default_rng(run.seeds["data_order"]).permutation(len(y)),
                    model=model)  # fmt: skip
    state = {"epoch": 0, "step": 0, "best": -1.0, "best_val": {}, "best_weights": None}
    saved = run.load_checkpoint()
    if saved is not None:  # a killed run: go on exactly where its last checkpoint was
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        order.bit_generator.state = saved["order"]
        torch.set_rng_state(saved["rng"])
        state = saved["state"]
    for epoch in range(state["epoch"], args.epochs):
        model.train()
        perm = torch.from_numpy(order.permutation(len(y)))
        for first in range(0, len(y), args.batch_size):
            idx = perm[first : first + args.batch_size]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            state["step"] += 1
            run.log({"train/loss": loss.item(), "train/lr": args.lr}, state["step"])
        val = evaluate(model, val_x, val_y)
        run.log({f"val/{k}": v for k, v in val.items()}, state["step"])
        if val["f1"] > state["best"]:
            state.update(
                best=val["f1"],
                best_val=val,
                best_weights={k: v.clone() for k, v in model.state_dict().items()},
            )
        state["epoch"] = epoch + 1
        run.save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "order": order.bit_generator.state, "rng": torch.get_rng_state(),
                             "state": state})  # fmt: skip
        if run.should_stop:
            run.stopped()
    model.load_state_dict(state["best_weights"])
    test = evaluate(model, *load(f"{args.data}/test.npz"))
    print("test " + "  ".join(f"{k} {v:.4f}" for k, v in test.items()))
    run.log_model(model, "pytorch", input_example=np.zeros((1, 1, 8, 8), dtype=np.float32))
    run.finish(test=test, best_val=state["best_val"], step=state["step"])


if __name__ == "__main__":
    main()
