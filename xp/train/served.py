"""The model a classification run logs when it is not a Hugging Face pipeline (the digits CNN):
an MLflow pyfunc that answers in the task's terms, class labels and their probabilities.

`mlflow.pyfunc.load_model(...).predict(images)` and `mlflow models serve` give one row per input:
`label` (the class name, `data.label_names`), `score` (its probability) and `prob_<label>` for
every class, the same shape of answer as the text models' `label` and `score`.
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import numpy as np


class LabelledClassifier(mlflow.pyfunc.PythonModel):
    """A torch classifier whose logits become labels and softmax probabilities."""

    def __init__(self, model: Any, labels: list[str]) -> None:
        self.model, self.labels = model, list(labels)

    def predict(self, context: Any, model_input: Any, params: dict | None = None) -> Any:
        import pandas as pd
        import torch

        x = np.asarray(model_input, dtype=np.float32)
        self.model.eval()
        with torch.no_grad():
            probs = torch.softmax(self.model(torch.as_tensor(x)).float(), -1).numpy()
        best = probs.argmax(1)
        out = pd.DataFrame({"label": [self.labels[i] for i in best],
                            "score": probs[np.arange(len(best)), best]})  # fmt: skip
        for j, name in enumerate(self.labels):
            out[f"prob_{name}"] = probs[:, j]
        return out
