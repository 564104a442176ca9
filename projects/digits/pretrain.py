"""DVC stage `digits_pretrain`: pre-train the digits CNN on digits 0-4.

Its output, models/digits_pretrained/, is the checkpoint that `projects/digits` fine-tunes on
digits 5-9: a real transfer-learning setting that trains in seconds on a CPU. Run by `dvc repro`.
"""

from pathlib import Path

from xp.record import numerics

numerics.apply("portable")  # before torch: the same weights, bit for bit, on any x86-64 CPU

import numpy as np  # noqa: E402
import torch  # noqa: E402

from xp.train.cnn import new_cnn, save_cnn  # noqa: E402

OUT = Path("models/digits_pretrained")
SEED, EPOCHS, BATCH, LR = 0, 30, 64, 2e-3


def main() -> None:
    numerics.pin_torch("portable")  # one thread, deterministic: the DVC hash holds everywhere
    torch.manual_seed(SEED)
    with np.load("data/digits/pretrain.npz") as z:
        X, y = torch.as_tensor(z["X"]), torch.as_tensor(z["y"])
    model = new_cnn(num_labels=5)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(SEED)
    for _ in range(EPOCHS):
        model.train()
        for idx in torch.randperm(len(y), generator=gen).split(BATCH):
            loss = torch.nn.functional.cross_entropy(model(X[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(X).argmax(-1) == y).float().mean().item()
    save_cnn(model, OUT)
    print(f"pre-trained on {len(y)} images of digits 0-4: train accuracy {acc:.3f} -> {OUT}")


if __name__ == "__main__":
    main()
