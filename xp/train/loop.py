"""The fine-tuning recipe, top to bottom: setup -> loop -> evaluate -> checkpoint -> finish.

This module is the setup (`train`); the loop is `xp.train.fit`, the end `xp.train.finish`.
Fine-tuning practice lives there: AdamW without weight decay on biases and norm weights, warm-up
then linear/cosine decay, gradient clipping (the norm is logged), freezing and gradual
unfreezing, layer-wise LR decay, gradient accumulation, augmentation, early stopping on a
validation metric keeping the best checkpoint, autocast on a GPU, and a seed per source of
randomness. A run killed by Ctrl-C or SIGTERM saves its last checkpoint and resumes
exactly (`--resume <run_id>`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from xp import XpError
from xp.config import SPLITS, Config
from xp.diagnose import audit
from xp.record import numerics, supervise
from xp.record import tags as record
from xp.record.track import start_tracker
from xp.record.workspace import Workspace
from xp.train import adapter, fingerprint, folds, retention
from xp.train.augment import Augmenter
from xp.train.data import load_splits, to_tensors
from xp.train.data_audit import audit_splits, record_audit
from xp.train.devices import device_label, pick_device
from xp.train.fit import Fit
from xp.train.models import build_model, resolve_source
from xp.train.monitoring import check_notify, lr_fault
from xp.train.recipe import check_layers
from xp.train.result import Events, Result, StopHook, no_events
from xp.train.resume import claim
from xp.train.seed import derive_seeds, epoch_order, set_deterministic

__all__ = ["DivergedError", "Events", "Result", "StopHook", "no_events", "train"]


class DivergedError(XpError):
    """The loss became NaN or infinite."""


def warm_imports(config: Config) -> None:
    """What a tracked run imports while its writer opens the store (it would wait otherwise):
    torch's optimizers import `torch._dynamo` at their first step (~1.5 s), a classification
    run's error figures matplotlib."""
    import torch._dynamo  # noqa: F401

    if config.task == "classification":
        from xp.diagnose.errors import pyplot

        pyplot()


# -- the job ----------------------------------------------------------------------------------
def train(
    config: Config,
    workspace: Workspace | Path,
    *,
    overrides: list[str] | None = None,
    track: bool = True,
    resume: str | None = None,
    group: str | None = None,
    events: Events = no_events,
    should_stop: StopHook | None = None,
) -> Result:
    """Run one fine-tuning job and record it.

    Args:
        config: the validated config.
        workspace: the repository it runs in, or its root (data paths are relative to it).
        overrides: the `key=value` overrides the user gave (recorded in `xp.command`).
        track: False for the null tracker (`--no-track`).
        resume: run id of a killed run to continue in place.
        group: the parent repeat run's id: this run is one of its seeds.
        events: callback for progress (`start`, `step`, `eval`, `end`); the CLI draws it.
        should_stop: asked after each evaluation with (step, validation metrics); True ends the
            run as `pruned` (a search's pruner hands one to its trials).

    Returns:
        The outcome, final metrics and run id.

    Raises:
        XpError: missing data, a bad model name, an unknown resume id.
    """
    # ---- setup: everything that can fail for a user reason fails before the store changes
    seeds = derive_seeds(config.seed.master, config.seed.model_dump(exclude={"master"}))
    supervise.training_seed(config.seed.master)
    t = config.train
    if resume and not track:
        raise XpError("--resume needs tracking: the run to continue lives in the store")
    device = pick_device(t.device)
    check_notify(config.monitor)  # (a notify command that cannot run: one line, before anything)
    lr_fault()
    if track:  # the metric writer imports MLflow while the model loads, not during the loop
        from xp.record.store import configure_store
        from xp.record.track import start_writer

        start_writer(training=True)
    if t.numerics != numerics.current():  # (a library caller that imported torch first)
        numerics.apply(t.numerics)
    if t.threads:
        torch.set_num_threads(t.threads)
    set_deterministic(t.deterministic)
    numerics.pin_torch(t.numerics)  # portable: one thread, deterministic, whatever else says
    workspace = Workspace.of(workspace)
    root = workspace.root
    model, tokenizer, source = build_model(config, root, seeds["init"])
    check_layers(config, model)
    model.to(device)
    init_print = fingerprint.of_params(model)  # (before a resumed run's weights are loaded)
    prov = record.gather(
        config, workspace, (source["kind"], source["location"]), device_label(device)
    )
    skipped = record.skipped_summary(prov.git)
    if skipped:
        events("warning", {"message": skipped})
    splits = load_splits(config, root, prov.data, seeds["split"])
    main = {name: splits[name] for name in SPLITS}  # (the audit's pairs; extra test sets aside)
    audited, not_audited = audit_splits(config, workspace, prov.data, main)
    said = audit.warning(audited) if audited else None
    if said:
        events("warning", {"message": said})
    feats = {n: to_tensors(s, tokenizer, config.data.max_length) for n, s in splits.items()}
    # (built here: augmentation the inputs cannot take is refused before any run exists)
    augment = Augmenter.build(config.augment, seeds["augment"], feats["train"], tokenizer)
    kept = retention.prepare(config, root, model, tokenizer, feats["validation"], device)
    with torch.random.fork_rng(devices=[]):  # the generator dropout will draw from, untouched
        torch.manual_seed(seeds["dropout"])
        dropout_print = fingerprint.of_rng()
    prints = fingerprint.tags(
        data_order=fingerprint.of_order(epoch_order(seeds["data_order"], 0, len(splits["train"]))),
        init=init_print, dropout=dropout_print,
    )  # fmt: skip
    if track:  # (a store that cannot be opened is one line, and no run: the writer opens it,
        # in `start_tracker`; a resumed run is read here first)
        configure_store(workspace, here=resume is not None)

    tags = record.training_tags(config, prov, workspace, overrides or [], group)
    tags["xp.model.source"] = f"{source['kind']}:{source['location']}"
    tags.update(folds.tags(splits["train"].fold))
    base = None
    if config.model.adapter is not None:  # the base model's identity, as the logged model has it
        base = adapter.identity(model, config.model.name, *resolve_source(config.model.name, root),
                                prov.data.get("backbone", {}).get("md5"))  # fmt: skip
        tags.update(adapter.tags(model, base))
    lock, saved, recorded = None, None, {}
    if resume:  # every check before the run is reopened: a refusal leaves it as it was
        recorded, lock, saved = claim(workspace, resume, config.project, tags, model)
        tags = {}  # the reopened run keeps its own provenance: none of it is overwritten
    rewrite = not resume or "xp.recorded" not in recorded  # (killed while it was written)
    params = None if resume else record.params_for(config, seeds)  # (with the run's creation)
    tracker = start_tracker(track, config.project, workspace, resume_run_id=resume, tags=tags,
                            meanwhile=lambda: warm_imports(config), params=params)  # fmt: skip
    if lock is None and track:
        lock = supervise.try_lock(workspace, tracker.run_id)
    with supervise.closed_on_error(tracker, lock):
        if resume:
            tracker.skip_recorded_points()  # a replayed step is not logged twice
        if rewrite:
            record.write(tracker, config, seeds, prov)
            tracker.set_tags(prints)
            record_audit(tracker, audited, not_audited)
        retention.record_before(tracker, kept)
        events("start", {"run_id": tracker.run_id, "tracking": tracker.enabled})
        supervise.fault_point("setup")
        return Fit(config, workspace, model, tokenizer, feats, splits, seeds, device, tracker,
                   saved, events, should_stop, kept, augment, base).run()  # fmt: skip
