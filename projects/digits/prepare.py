"""DVC stage `digits_data`: scikit-learn's bundled digits -> fixed splits under data/digits/.

Digits 0-4 pre-train the backbone; digits 5-9 are the fine-tuning task, with only a few hundred
labelled images to learn from (labels 5..9 become classes 0..4). Run by `dvc repro`.
"""

import io
import zipfile
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

OUT = Path("data/digits")
SPLIT_SEED = 0  # fixed: every run of every config sees the same split
N_TRAIN, N_VALIDATION = 300, 200  # few labelled examples: where fine-tuning choices matter


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Like np.savez, but byte-identical on every run (fixed zip timestamps), so DVC hashes hold."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            zf.writestr(
                zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue()
            )


def main() -> None:
    X, y = load_digits(return_X_y=True)
    X = X.reshape(-1, 8, 8).astype(np.float32)  # raw pixel values 0..16
    OUT.mkdir(parents=True, exist_ok=True)
    low = y < 5
    save_npz(OUT / "pretrain.npz", X=X[low], y=y[low].astype(np.int64))
    Xf, yf = X[~low], (y[~low] - 5).astype(np.int64)
    X_tr, X_rest, y_tr, y_rest = train_test_split(
        Xf, yf, train_size=N_TRAIN, stratify=yf, random_state=SPLIT_SEED
    )
    X_va, X_te, y_va, y_te = train_test_split(
        X_rest, y_rest, train_size=N_VALIDATION, stratify=y_rest, random_state=SPLIT_SEED
    )
    for name, (a, b) in {
        "train": (X_tr, y_tr),
        "validation": (X_va, y_va),
        "test": (X_te, y_te),
    }.items():
        save_npz(OUT / f"{name}.npz", X=a, y=b)
        print(f"{name}: {len(b)} images")
    print(f"pretrain: {int(low.sum())} images (digits 0-4)")


if __name__ == "__main__":
    main()
