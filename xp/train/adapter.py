"""LoRA through peft: adapters on a frozen base, what they cost, and whether they merge.

`wrap` puts peft's LoRA on a Hugging Face model (the new head trained in full, as peft's
sequence-classification task does); `identity` is the base model's identity the record and the
logged model carry (the folder or package path with its md5, or the hub id with its revision);
`merge_check` compares the merged model's outputs with the adapter model's (peft#2502: they
have differed); `save` writes what the logged model holds: the adapter alone, the tokenizer and
the base's identity, never the base's weights (mlflow#22020).
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from xp import XpError
from xp.config import AdapterConfig


class AdapterError(XpError):
    """An adapter the model cannot take (a target module it lacks)."""


BASE_FILE = "base.json"  # the base model's identity, next to the adapter's own files
ADAPTABLE = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Embedding)


def adaptable_modules(model: torch.nn.Module) -> list[str]:
    """The last names of the modules LoRA can adapt (`query`, `value`, `dense`, ...)."""
    return sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                   if isinstance(m, ADAPTABLE) and n})  # fmt: skip


def wrap(model: torch.nn.Module, cfg: AdapterConfig, name: str) -> Any:
    """`model` with LoRA adapters on `cfg.target_modules` (peft's default for the architecture
    when None); only the adapters and the head train.

    Raises:
        AdapterError: a target module the model lacks.
    """
    from peft import LoraConfig, TaskType, get_peft_model

    if cfg.target_modules is not None:
        known = adaptable_modules(model)
        missing = [t for t in cfg.target_modules if t not in known]
        if missing:
            raise AdapterError(
                f"model.adapter.target_modules: {missing[0]!r} is not a module of {name}; its "
                f"adaptable modules are {', '.join(known)}"
            )
    lora = LoraConfig(task_type=TaskType.SEQ_CLS, r=cfg.r, lora_alpha=cfg.alpha,
                      lora_dropout=cfg.dropout, target_modules=cfg.target_modules)  # fmt: skip
    try:
        return get_peft_model(model, lora)
    except ValueError as e:  # (no default targets for this architecture)
        raise AdapterError(f"model.adapter: {str(e).splitlines()[0]}") from None


def counts(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters as training starts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def file_md5s(folder: Path) -> dict[str, str]:
    """Every file under `folder`, relative path -> md5: what a loaded adapter checks its base
    against (with no DVC where the model is served)."""
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h = hashlib.md5()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        out[path.relative_to(folder).as_posix()] = h.hexdigest()
    return out


def identity(model: Any, name: str, kind: str, where: str, md5: str | None) -> dict[str, Any]:
    """The base model's identity: what `model.name` said, where it resolved, and its version
    (the folder's DVC md5 for a path or a package; the commit for a hub id)."""
    base = model.get_base_model()
    out: dict[str, Any] = {"name": name, "kind": kind, "location": where, "md5": md5,
                           "revision": getattr(base.config, "_commit_hash", None)}  # fmt: skip
    if kind != "hub":
        out["files"] = file_md5s(Path(where))
    cfg = base.config
    out.update(num_labels=cfg.num_labels, problem_type=cfg.problem_type,
               id2label={str(k): v for k, v in cfg.id2label.items()})  # fmt: skip
    return out


def tags(model: Any, base: dict[str, Any]) -> dict[str, str]:
    """The `xp.adapter.*` tags of a peft model (LoRA's settings; another method's kind)."""
    cfg = model.peft_config["default"]
    shown: dict[str, Any] = {"kind": str(getattr(cfg.peft_type, "value", cfg.peft_type)).lower()}
    for key, field in (("r", "r"), ("alpha", "lora_alpha"), ("dropout", "lora_dropout"),
                       ("target_modules", "target_modules"),
                       ("modules_to_save", "modules_to_save")):  # fmt: skip
        value = getattr(cfg, field, None)
        if value is not None:
            shown[key] = sorted(value) if isinstance(value, (set, list, tuple)) else value
    out = {"xp.adapter.config": json.dumps(shown, sort_keys=True),
           "xp.adapter.base": str(base["name"]), "xp.adapter.base_kind": base["kind"]}  # fmt: skip
    if base.get("md5"):
        out["xp.adapter.base_md5"] = base["md5"]
    if base.get("revision"):
        out["xp.adapter.base_revision"] = base["revision"]
    return out


def recorded(model: Any, root: Path) -> dict[str, str]:
    """What a script's model is recorded with, as xp's trainer records its own: the parameter
    counts; for a peft model, its adapter config and the base's identity (a local folder with
    DVC's md5 of it, or a hub id with its revision)."""
    trainable, total = counts(model)
    out = {"xp.model.trainable_params": str(trainable), "xp.model.total_params": str(total)}
    if not hasattr(model, "peft_config"):
        return out
    cfg = model.peft_config["default"]
    name = cfg.base_model_name_or_path or ""
    local = Path(name) if Path(name).is_absolute() else root / name
    if name and local.is_dir():
        from xp.record.provenance import data_versions

        md5 = data_versions({"base": str(local)}, root)["base"]["md5"]
        base: dict[str, Any] = {"name": name, "kind": "path", "md5": md5}
    else:
        revision = cfg.revision or getattr(model.get_base_model().config, "_commit_hash", None)
        base = {"name": name, "kind": "hub", "revision": revision}
    out.update(tags(model, base))
    return out


@torch.no_grad()
def merge_check(model: Any, features: dict[str, Any], logits_of: Any) -> float:
    """The largest |difference| between the merged model's outputs and the adapter model's on
    `features` (the validation inputs). `logits_of(model, features)` gives a model's outputs."""
    unmerged = logits_of(model, features)
    merged = copy.deepcopy(model).merge_and_unload()
    return float((logits_of(merged, features) - unmerged).abs().max())


def save(model: Any, tokenizer: Any, base: dict[str, Any], max_length: int, out: Path) -> Path:
    """The adapter alone (peft's files, the head included), the tokenizer and `base.json`."""
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / BASE_FILE).write_text(json.dumps({**base, "max_length": max_length}, indent=1))
    return out
