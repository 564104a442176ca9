"""Load a registered digits model and classify the raw 8x8 test images with it.

    python projects/digits/predict.py digits-cnn@champion

The model is whatever `xp promote` put behind the alias: an MLflow pyfunc that takes float32
images of shape (n, 8, 8), pixel values 0-16 as scikit-learn ships them, and answers one row per
image: `label` (the digit, "5".."9"), `score` (its probability) and `prob_5` .. `prob_9`.
"""

import sys

import mlflow
import numpy as np

LABELS = ["5", "6", "7", "8", "9"]


def main(spec: str) -> None:
    model = mlflow.pyfunc.load_model(f"models:/{spec}")
    with np.load("data/digits/test.npz") as z:
        images, labels = z["X"].astype(np.float32), z["y"]
    answer = model.predict(images)
    predicted, truth = answer["label"].tolist(), [LABELS[i] for i in labels]
    hits = np.mean([p == t for p, t in zip(predicted, truth)])
    print(
        f"models:/{spec}: predicted {predicted[:8]} for the first 8 test images (true "
        f"{truth[:8]}; the first with probability {answer['score'].iloc[0]:.3f}); accuracy on all "
        f"{len(labels)}: {hits:.4f}"
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "digits-cnn@champion")
