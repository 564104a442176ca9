"""DVC stage `vader_ood`: an out-of-distribution test set for the VADER projects.

The lexicon's items are single tokens; a deployed sentiment model reads sentences. No installed
package ships labelled sentences, so this set puts each test token into one of a few neutral
sentence frames ("Honestly, it was {token}."), keeping the human rating of the token as the label:
the same words, in context. `data/vader/test_sentences.csv` has the columns of the other splits
(`text`, `label`, `valence`). Byte-identical on every run (a fixed generator). Run by `dvc repro`.
"""

from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path("data/vader")
OOD_SEED = 0
FRAMES = (  # short, carrying no sentiment of their own: the token fits in data.max_length
    "Honestly, it was {}.",
    "{}, if you ask me.",
    "My word for it: {}.",
    "It felt {} to me.",
    "They called it {} today.",
    "In a word: {}.",
)


def main() -> None:
    test = pd.read_csv(OUT / "test.csv", keep_default_na=False)
    frames = np.random.default_rng(OOD_SEED).integers(0, len(FRAMES), len(test))
    out = test.copy()
    out["text"] = [FRAMES[f].format(t) for f, t in zip(frames, test["text"])]
    out.to_csv(OUT / "test_sentences.csv", index=False, float_format="%.4f", lineterminator="\n")
    print(f"test_sentences: {len(out)} sentences")


if __name__ == "__main__":
    main()
