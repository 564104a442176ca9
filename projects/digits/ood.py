"""DVC stage `digits_ood`: out-of-distribution test sets made from the digits test images.

The fine-tuning data are centred, clean scans; a deployed model meets digits that are not. Two
sets, the same 396 test images and labels, each changed one way:
- `test_shifted.npz`: every image moved by one pixel (an eighth of its width) in one of the eight
  directions, zeros filled in: handwriting not centred in its box;
- `test_noisy.npz`: Gaussian noise with a standard deviation of 3 (pixels run 0..16), clipped:
  a poor scan.
Projects name them in `data.extra_tests` and get `test:shifted/<m>`, `test:noisy/<m>` beside
`test/<m>`. Byte-identical on every run (a fixed generator, fixed zip timestamps). Run by
`dvc repro`.
"""

from pathlib import Path

import numpy as np
from prepare import OUT, save_npz  # (projects/digits/prepare.py: the same writer)

OOD_SEED = 0
NOISE_SD = 3.0
DIRECTIONS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def shift(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """`image` moved by (dy, dx) pixels, zeros where nothing moved in."""
    out = np.zeros_like(image)
    h, w = image.shape
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = image[
        max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def main() -> None:
    with np.load(OUT / "test.npz") as z:
        X, y = z["X"], z["y"]
    rng = np.random.default_rng(OOD_SEED)
    moves = rng.integers(0, len(DIRECTIONS), len(X))
    shifted = np.stack([shift(x, *DIRECTIONS[m]) for x, m in zip(X, moves)]).astype(np.float32)
    noisy = np.clip(X + rng.normal(0.0, NOISE_SD, X.shape), 0, 16).astype(np.float32)
    for name, images in (("test_shifted", shifted), ("test_noisy", noisy)):
        save_npz(Path(OUT) / f"{name}.npz", X=images, y=y)
        print(f"{name}: {len(y)} images")


if __name__ == "__main__":
    main()
