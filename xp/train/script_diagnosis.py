"""The diagnosis of a script's run, from what the script logged to it.

xp's trainer watches every step as it trains; a script's steps are its own. Where the script
logged what a rule reads, xp reads it back from the run when the script exits and records the same
names as for its own trainer:

- the monitor's rules replayed over `train/loss` and `train/grad_norm` (and `val/<metric>` for
  stalls), with the default `monitor.*` settings: `monitor/<kind>`, `xp.monitor.*`,
  `monitor/events.json`, and `xp.monitor.replayed = true` (found after the run: never acted on,
  never sent to a notify command);
- the overfitting diagnosis where the script also evaluated a training sample at its evaluations
  (`train_sample/loss` and `train_sample/<metric>` beside `val/loss` and `val/<metric>`); without
  one it says `unknown (...)`, never a guess from the running training loss.

Replaying is deterministic, so a resumed script's run, judged again, records the same values.
"""

from __future__ import annotations

import json
from typing import Any

from xp.config import MonitorConfig, ScriptConfig, higher_is_better
from xp.diagnose import overfitting
from xp.diagnose.monitor import KINDS, Monitor


def _evals(hist: dict[str, list[tuple[int, float]]], metric: str) -> list[dict[str, float]]:
    val_loss, val = dict(hist.get("val/loss", [])), dict(hist.get(f"val/{metric}", []))
    train_loss = dict(hist.get("train_sample/loss", []))
    train = dict(hist.get(f"train_sample/{metric}", []))
    out = []
    for step in sorted(set(val_loss) & set(val)):
        point = {"step": step, "val_loss": val_loss[step], "val": val[step]}
        if step in train_loss and step in train:
            point.update(train_loss=train_loss[step], train=train[step])
        out.append(point)
    return out


def diagnose_script_run(tracker: Any, config: ScriptConfig) -> None:
    """Replay the monitor and diagnose overfitting from the run's own metric histories."""
    from xp.record.track import metric_histories

    metric = config.eval.metric or "f1"
    keys = ["train/loss", "train/grad_norm", "val/loss", f"val/{metric}", "train_sample/loss",
            f"train_sample/{metric}"]  # fmt: skip
    hist = metric_histories(tracker.run_id, keys)
    losses = sorted(hist.get("train/loss", []))
    if losses:
        _replay_monitor(tracker, hist, losses, metric)
    evals = _evals(hist, metric)
    if evals:
        better = higher_is_better(metric)
        best = max(evals, key=lambda e: e["val"] if better else -e["val"])["step"]
        last = max([evals[-1]["step"], *([losses[-1][0]] if losses else [])])
        found = overfitting.diagnose(evals, metric, better, int(best), int(last))
        if found["verdict"] == "unknown":
            found["text"] = "unknown (the script logs no training-sample evaluation)"
        tracker.set_tags(overfitting.tags(found))
        tracker.log_text(json.dumps({**found, "evaluations": evals}, indent=1),
                         "diagnosis/overfitting.json")  # fmt: skip


def _replay_monitor(tracker: Any, hist: dict, losses: list[tuple[int, float]], metric: str) -> None:
    monitor = Monitor(MonitorConfig(), warmup_steps=0)
    grads = dict(hist.get("train/grad_norm", []))
    events = []
    for step, loss in losses:
        events += monitor.on_step(step, loss, grads.get(step))
    best = None
    for step, value in sorted(hist.get(f"val/{metric}", [])):
        improved = best is None or (value > best if higher_is_better(metric) else value < best)
        best = value if improved else best
        events += monitor.on_eval(step, improved)
    events.sort(key=lambda e: e.step)
    counts = {kind: 0 for kind in KINDS}
    for event in events:
        counts[event.kind] += 1
        tracker.log_metrics({f"monitor/{event.kind}": float(counts[event.kind])}, event.step)
    tracker.log_metrics({f"monitor/{k}": float(v) for k, v in counts.items()}, losses[-1][0])
    tags = {"xp.monitor.events": str(len(events)), "xp.monitor.replayed": "true"}
    if events:
        tags["xp.monitor.first"] = events[0].message
    tracker.set_tags(tags)
    record = {"counts": counts, "replayed": True, "events": [e.to_json() for e in events]}
    tracker.log_text(json.dumps(record, indent=1), "monitor/events.json")
