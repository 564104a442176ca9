"""The model a classification run logs when it is not a Hugging Face pipeline (the digits CNN):
an MLflow pyfunc that answers in the task's terms, class labels and their probabilities.

`mlflow.pyfunc.load_model(...).predict(images)` and `mlflow models serve` give one row per input:
`label` (the class name, `data.label_names`), `score` (its probability) and `prob_<label>` for
every class, the same shape of answer as the text models' `label` and `score`. A LoRA run's
adapter answers the same columns; `SeedEnsemble` averages several seeds' models into one.
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


class AdapterTextModel(mlflow.pyfunc.PythonModel):
    """A LoRA run's logged model: the adapter alone, put back on its base at load time.

    The base is found from its identity (`base.json`, `xp.train.adapter.identity`): a package's
    folder (`pkg://<module>/<dir>`), a local folder (where it was, or the same path relative to
    the working directory), or a hub id at its recorded revision. A local or package base whose
    files differ from those the adapter was trained on is refused in one line.
    """

    def load_context(self, context: Any) -> None:
        import json
        from pathlib import Path

        from peft import PeftModel
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        folder = Path(context.artifacts["adapter"])
        base = json.loads((folder / "base.json").read_text())
        where = _locate_base(base)
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        labels = {int(k): v for k, v in base["id2label"].items()}
        model = AutoModelForSequenceClassification.from_pretrained(
            where, num_labels=base["num_labels"], problem_type=base["problem_type"],
            id2label=labels, label2id={v: k for k, v in labels.items()},
            ignore_mismatched_sizes=True, revision=base.get("revision") or None,
        )  # fmt: skip
        self.model = PeftModel.from_pretrained(model, folder).eval()
        self.labels, self.max_length = labels, base.get("max_length", 512)
        self.regression = base["problem_type"] == "regression"

    def predict(self, context: Any, model_input: Any, params: dict | None = None) -> Any:
        import pandas as pd
        import torch

        if isinstance(model_input, pd.DataFrame):
            texts = [str(t) for t in model_input.iloc[:, 0]]
        else:
            texts = [str(t) for t in np.asarray(model_input).ravel()]
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt")  # fmt: skip
        with torch.no_grad():
            logits = self.model(**enc).logits.float()
        if self.regression:
            return pd.DataFrame({"score": logits[:, 0].numpy()})
        probs = torch.softmax(logits, -1).numpy()
        best = probs.argmax(1)
        out = pd.DataFrame({"label": [self.labels[i] for i in best],
                            "score": probs[np.arange(len(best)), best]})  # fmt: skip
        for j in range(probs.shape[1]):  # (what an ensemble of adapters averages)
            out[f"prob_{self.labels[j]}"] = probs[:, j]
        return out


class SeedEnsemble(mlflow.pyfunc.PythonModel):
    """Several seeds' logged models as one (`xp promote --ensemble`): the mean of their class
    probabilities, answered as each member answers (`label`, `score`, `prob_<label>`).

    Its artifacts are the members' own logged models (`seed_<n>`), each loaded as the pyfunc it
    was logged as; a member must answer `prob_<label>` columns (xp's classifiers do).
    """

    def load_context(self, context: Any) -> None:
        import mlflow.pyfunc

        names = sorted(context.artifacts, key=lambda k: int(k.removeprefix("seed_")))
        self.members = [mlflow.pyfunc.load_model(context.artifacts[k]) for k in names]

    def predict(self, context: Any, model_input: Any, params: dict | None = None) -> Any:
        import pandas as pd

        answers = [m.predict(model_input) for m in self.members]
        columns = [c for c in answers[0].columns if str(c).startswith("prob_")]
        if not columns or any([c for c in a.columns if str(c).startswith("prob_")] != columns
                              for a in answers):  # fmt: skip
            raise ValueError("the ensemble's members must answer the same prob_<label> columns")
        probs = average([a[columns].to_numpy(np.float32) for a in answers])
        labels = [c.removeprefix("prob_") for c in columns]
        best = probs.argmax(1)
        out = pd.DataFrame({"label": [labels[i] for i in best],
                            "score": probs[np.arange(len(best)), best]})  # fmt: skip
        for j, name in enumerate(labels):
            out[f"prob_{name}"] = probs[:, j]
        return out


def average(answers: list[np.ndarray]) -> np.ndarray:
    """The members' probabilities (or regression outputs) averaged, in float32: what `xp
    ensemble` measures and what the registered ensemble answers, to the same bits."""
    return np.mean(np.stack([np.asarray(a, dtype=np.float32) for a in answers]), axis=0)


def _locate_base(base: dict[str, Any]) -> str:
    """Where the adapter's base model is on this machine, checked against its recorded files."""
    import importlib.util
    from pathlib import Path

    name, kind = base["name"], base["kind"]
    if kind == "hub":
        return name
    if kind == "package":
        module, _, sub = name.removeprefix("pkg://").partition("/")
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError(f"the adapter's base {name} needs the package {module!r} installed")
        where = Path(next(iter(spec.submodule_search_locations))) / sub
    else:
        where = next((p for p in (Path(base["location"]), Path(name)) if p.is_dir()), None)
        if where is None:
            raise RuntimeError(f"the adapter's base folder {name} is not here (nor at "
                               f"{base['location']}); `dvc pull` it")  # fmt: skip
    from xp.train.adapter import file_md5s

    if base.get("files") and file_md5s(where) != base["files"]:
        raise RuntimeError(f"the base model at {where} is not the one this adapter was trained "
                           f"on (md5 {base.get('md5')}): its files differ")  # fmt: skip
    return str(where)
