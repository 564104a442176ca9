"""A small CNN on the digits 5-9 as a PyTorch Lightning module: an ordinary Lightning script.

The xp lines: `XpLogger()` and `XpCallback()` given to the Trainer. Each seed goes where it belongs:
`--init_seed` (the weights), `--data_seed` (the order of the examples), `--dropout_seed`.
Run on its own: `python projects/digits_lightning/train.py --data data/digits --out /tmp/out`.
"""

import argparse

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from xp.integrations.lightning import XpCallback, XpLogger


class Digits(L.LightningModule):
    def __init__(self, lr: float = 3e-3, dropout: float = 0.2, classes: int = 5):
        super().__init__()
        self.save_hyperparameters()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        )  # fmt: skip
        self.head = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Dropout(dropout), torch.nn.Linear(32 * 4 * 4, classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def training_step(self, batch, _index):
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self(x), y)
        self.log("train/loss", loss, on_step=True, on_epoch=False)
        return loss

    def _evaluate(self, batch, split: str) -> None:
        x, y = batch
        logits = self(x)
        predicted = logits.argmax(-1).cpu().numpy()
        p, r, f1, _ = precision_recall_fscore_support(y.cpu().numpy(), predicted,
                                                      average="macro", zero_division=0)  # fmt: skip
        self.log_dict({f"{split}/loss": torch.nn.functional.cross_entropy(logits, y).item(),
                       f"{split}/accuracy": accuracy_score(y.cpu().numpy(), predicted),
                       f"{split}/precision": p, f"{split}/recall": r, f"{split}/f1": f1},
                      batch_size=len(y))  # fmt: skip

    def validation_step(self, batch, _index):
        self._evaluate(batch, "val")

    def test_step(self, batch, _index):
        self._evaluate(batch, "test")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["rng"] = torch.get_rng_state()  # dropout's generator: an exact resume

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        torch.set_rng_state(checkpoint["rng"])

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.01)


class EpochOrder(torch.utils.data.Sampler):
    """A shuffle that is a function of (data seed, epoch): Lightning sets the epoch, so a resumed
    run sees the order the killed one would have."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter(np.random.default_rng([self.seed, self.epoch]).permutation(self.n).tolist())


def split(path: str) -> torch.utils.data.TensorDataset:
    data = np.load(path)
    return torch.utils.data.TensorDataset(torch.from_numpy(data["X"]).unsqueeze(1) / 16.0,
                                          torch.from_numpy(data["y"]))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/digits")
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--init_seed", type=int, default=1)
    ap.add_argument("--data_seed", type=int, default=2)
    ap.add_argument("--dropout_seed", type=int, default=3)
    ap.add_argument("--resume", default=None)
    args = ap.parse_args()

    logger, callback = XpLogger(), XpCallback()  # join the run xp handed this process
    torch.manual_seed(args.init_seed)
    model = Digits(lr=args.lr, dropout=args.dropout)
    examples = split(f"{args.data}/train.npz")
    train = torch.utils.data.DataLoader(
        examples, args.batch_size, sampler=EpochOrder(len(examples), args.data_seed)
    )
    val = torch.utils.data.DataLoader(split(f"{args.data}/validation.npz"), 512)
    test = torch.utils.data.DataLoader(split(f"{args.data}/test.npz"), 512)
    torch.manual_seed(args.dropout_seed)  # from here on torch's generator only feeds dropout
    best = ModelCheckpoint(dirpath=f"{args.out}/checkpoints", monitor="val/f1", mode="max",
                           save_last=True)  # fmt: skip
    trainer = L.Trainer(max_epochs=args.epochs, logger=logger, callbacks=[callback, best],
                        accelerator="cpu", deterministic=True, log_every_n_steps=1,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(model, train, val, ckpt_path=args.resume)
    trainer.test(model, test, ckpt_path="best", verbose=False)


if __name__ == "__main__":
    main()
