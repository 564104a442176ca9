"""`xp diagnose <run id>`: why a run or a repeat is good or bad, from the tracking store alone.

For a training run: its outcome, the data audit, the overfitting diagnosis, the monitor's events
and forgetting, each read from what the run recorded (`xp.audit.*`, `xp.diagnosis.*`,
`xp.monitor.*` tags, `monitor/<kind>` and `retention/*` metrics). For a repeat: the same over
its seeds (how many overfit, the patience that would have stopped them, the events per seed,
forgetting with its interval). A run recorded before xp diagnosed runs has none of it: the
checkup says what is missing and never makes it up.
"""

from __future__ import annotations

from typing import Any

from xp import XpError
from xp.diagnose import diagnosis, overfitting
from xp.diagnose.monitor import KINDS

MISSING = (
    "not recorded (a run older than this part of xp's record, or a script project's run, "
    "which reports only what its script logs)"
)


def _audit_line(tags: dict[str, str]) -> str:
    findings = tags.get("xp.audit.findings")
    if findings is None:
        return MISSING
    leak = tags.get("xp.audit.leakage")
    share = f" (test inputs also in train: {float(leak):.1%})" if leak and float(leak) else ""
    return f"{findings}{share}"


def _overfitting_line(found: dict[str, Any]) -> str:
    if not found:
        return MISSING
    figures = [("val_loss_rise", "validation loss {:+.1%} from its low"),
               ("gap_at_best", "gap at the kept checkpoint {:.4f}"),
               ("gap_at_end", "at the end {:.4f}"),
               ("steps_after_best", "{} steps trained after it")]  # fmt: skip
    said = [
        fmt.format(found[key]) for key, fmt in figures if isinstance(found.get(key), int | float)
    ]
    return f"{found['text']}: {', '.join(said)}" if said else found["text"]


def _monitor_line(tags: dict[str, str], metrics: dict[str, float]) -> str:
    if "xp.monitor.events" not in tags and not any(k.startswith("monitor/") for k in metrics):
        return MISSING
    if tags.get("xp.monitor.events") == "off":
        return "off (monitor.enabled=false)"
    counts = {k: int(metrics.get(f"monitor/{k}", 0)) for k in KINDS}
    total = sum(counts.values())
    if not total:
        return "no event"
    kinds = ", ".join(f"{k} {n}" for k, n in counts.items() if n)
    return f"{total} events ({kinds}); the first: {tags.get('xp.monitor.first', '?')}"


def _forgetting_line(metrics: dict[str, float]) -> str:
    parts = []
    if "retention/accuracy_before" in metrics and "retention/accuracy" in metrics:
        parts.append(f"the pre-trained task's accuracy {metrics['retention/accuracy_before']:.4f} "
                     f"-> {metrics['retention/accuracy']:.4f} (drop "
                     f"{metrics.get('retention/drop', float('nan')):.4f})")  # fmt: skip
    if "retention/cka" in metrics:
        parts.append(f"the backbone's features at CKA {metrics['retention/cka']:.3f} with the "
                     "pre-trained ones (1: unmoved)")  # fmt: skip
    return "; ".join(parts) or MISSING


def run_checkup(run: Any) -> dict[str, Any]:
    """The checkup of one training run."""
    tags, metrics = run.data.tags, run.data.metrics
    outcome = tags.get("xp.outcome", run.info.status.lower())
    if tags.get("xp.failure"):
        outcome += f": {tags['xp.failure']}"
    return {"run_id": run.info.run_id, "kind": "train",
            "lines": [("outcome", outcome), ("data audit", _audit_line(tags)),
                      ("overfitting", _overfitting_line(overfitting.from_tags(tags))),
                      ("monitor", _monitor_line(tags, metrics)),
                      ("forgetting", _forgetting_line(metrics))]}  # fmt: skip


def repeat_checkup(parent: Any) -> dict[str, Any]:
    """The checkup of a repeat: over its seeds, then each seed in one line."""
    from xp.record.artifacts import recorded_json
    from xp.repeat import recorded_seed_runs
    from xp.summary import summarize

    runs, children = recorded_seed_runs(parent)
    for r in runs:  # each seed's error analysis (none for a run recorded before it)
        r.errors = recorded_json(r.run_id, "errors/errors.json") if r.run_id else {}
    summary = summarize(runs, parent.data.tags.get("xp.metric", "test/f1"))
    found = summary["diagnosis"]
    first = next((children[r.run_id] for r in runs if r.run_id in children), None)
    lines = [("seeds", f"{len(runs)} ({sum(r.succeeded for r in runs)} succeeded)"),
             ("data audit", _audit_line(first.data.tags) if first else MISSING)]  # fmt: skip
    for line in diagnosis.sentences(summary):
        head, _, rest = line.partition(": ")
        lines.append((head, rest))
    for r in runs:
        child = children.get(r.run_id or "")
        if child is None:
            lines.append((r.label, f"{r.outcome}, no run recorded"))
            continue
        lines.append((r.label, f"{r.outcome}; overfitting "
                      f"{_overfitting_line(r.diagnosis)}; monitor "
                      f"{_monitor_line(child.data.tags, child.data.metrics)}"))  # fmt: skip
    return {"run_id": parent.info.run_id, "kind": "repeat", "lines": lines, "diagnosis": found}


def checkup(run_id: str) -> dict[str, Any]:
    """The checkup of a training or repeat run.

    Raises:
        XpError: an unknown run id, or a run that is neither.
    """
    from xp.record import track

    run = track.get_run(run_id)
    kind = run.data.tags.get("xp.kind")
    if kind == "repeat":
        return repeat_checkup(run)
    if kind == "train":
        return run_checkup(run)
    raise XpError(f"run {run_id} is a {kind or 'non-xp'} run; xp diagnose takes a training run "
                  "or a repeat")  # fmt: skip
