"""Load a registered digits model and classify the raw 8x8 test images with it.

    python projects/digits/predict.py digits-cnn@champion

The model is whatever `xp promote` put behind the alias: an MLflow pyfunc that takes float32
images of shape (n, 8, 8), pixel values 0-16 as scikit-learn ships them, and returns one logit
per class (digits 5-9).
"""

import sys

import mlflow
import numpy as np

LABELS = ["5", "6", "7", "8", "9"]


def main(spec: str) -> None:
    model = mlflow.pyfunc.load_model(f"models:/{spec}")
    with np.load("data/digits/test.npz") as z:
        images, labels = z["X"].astype(np.float32), z["y"]
    predicted = np.asarray(model.predict(images)).argmax(axis=1)
    print(
        f"models:/{spec}: predicted {[LABELS[i] for i in predicted[:8]]} for the first 8 "
        f"test images (true {[LABELS[i] for i in labels[:8]]}); accuracy on all "
        f"{len(labels)}: {(predicted == labels).mean():.4f}"
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "digits-cnn@champion")
