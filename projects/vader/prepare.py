"""DVC stage `vader_data`: the VADER sentiment lexicon -> fixed train/validation/test CSVs.

7,520 English tokens (words, emoticons, slang), each with the mean valence (-4..+4) that ten
human raters gave it. Columns: `text`, `label` (0 negative, 1 neutral, 2 positive) and `valence`
(the mean rating). Used by projects/vader (classification) and projects/vader_valence
(regression). Run by `dvc repro`.
"""

import importlib.resources
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

OUT = Path("data/vader")
SPLIT_SEED = 0
NEUTRAL_BAND = 1.0  # |valence| < 1 is neutral: mild words raters barely agreed were polar


def main() -> None:
    text = (importlib.resources.files("vaderSentiment") / "vader_lexicon.txt").read_text("utf-8")
    rows = [line.split("\t")[:2] for line in text.splitlines() if line.strip()]
    df = pd.DataFrame(rows, columns=["text", "valence"])
    df["valence"] = df["valence"].astype(float)
    df["label"] = np.select(
        [df["valence"] <= -NEUTRAL_BAND, df["valence"] >= NEUTRAL_BAND], [0, 2], default=1
    )
    df = df[["text", "label", "valence"]]
    train, rest = train_test_split(
        df, train_size=0.7, stratify=df["label"], random_state=SPLIT_SEED
    )
    val, test = train_test_split(
        rest, train_size=0.5, stratify=rest["label"], random_state=SPLIT_SEED
    )
    OUT.mkdir(parents=True, exist_ok=True)
    for name, part in {"train": train, "validation": val, "test": test}.items():
        part.to_csv(OUT / f"{name}.csv", index=False, float_format="%.4f", lineterminator="\n")
        counts = part["label"].value_counts().sort_index().tolist()
        print(f"{name}: {len(part)} tokens, classes (neg, neutral, pos) = {counts}")


if __name__ == "__main__":
    main()
