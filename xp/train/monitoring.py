"""The monitor in a training run: each event printed, journaled, recorded, notified, acted on.

An event is appended to the run's journal (`.xp/runs/<run id>/monitor/events.jsonl`, flushed to
disk) before anything else is done with it, so a run killed mid-event and resumed neither loses
it nor raises it twice: the replayed steps find it there, record what was not recorded yet, and
neither say nor notify it again (a notification is sent at most once). The record: a count per
kind as metrics (`monitor/<kind>`, at the event's step, and every kind at the end), the first
event as the tag
`xp.monitor.first`, the journal as the artifact `monitor/events.json`. `monitor.notify` gets
each event as JSON on its stdin, from a background thread, each call bounded by
`monitor.notify_timeout`; a failing one never stops training and is recorded once
(`xp.monitor.notify_error`).
"""

from __future__ import annotations

import json
import math
import os
import queue
import shlex
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xp import XpError
from xp.config import MonitorConfig
from xp.diagnose.monitor import KINDS, Event, Monitor
from xp.record import supervise

FAULT_LR_ENV = "XP_FAULT_LR"  # <step>:<factor>[:<steps>] multiplies the LR (tests, benchmarks)


def check_notify(settings: MonitorConfig) -> list[str] | None:
    """The notify command as argv, checked before training: one line when it cannot run."""
    if not settings.enabled or not settings.notify:
        return None
    try:
        argv = shlex.split(settings.notify)
    except ValueError as exc:
        raise XpError(f"monitor.notify={settings.notify!r} cannot be parsed: {exc}") from None
    if not argv or shutil.which(argv[0]) is None:
        raise XpError(f"monitor.notify: command {argv[0] if argv else ''!r} not found; give a "
                      "command that reads an event as JSON on stdin")  # fmt: skip
    return argv


def lr_fault() -> tuple[int, float, int] | None:
    """`XP_FAULT_LR=40:30` multiplies the LR by 30 at step 40; `40:30:0` from step 40 to the end,
    `40:30:5` for 5 steps. None when unset."""
    spec = os.environ.get(FAULT_LR_ENV, "").strip()
    if not spec:
        return None
    parts = spec.split(":")
    try:
        step, factor = int(parts[0]), float(parts[1])
        steps = int(parts[2]) if len(parts) > 2 else 1
    except (ValueError, IndexError):
        raise XpError(f"{FAULT_LR_ENV}={spec!r}: use <step>:<factor>[:<steps>]") from None
    return step, factor, steps


def lr_factor(fault: tuple[int, float, int] | None, step: int) -> float:
    """The LR multiplier the fault sets for optimizer step `step` (1-based)."""
    if fault is None:
        return 1.0
    first, factor, steps = fault
    last = math.inf if steps == 0 else first + steps - 1
    return factor if first <= step <= last else 1.0


class _Notifier:
    """Runs the notify command on each event, one at a time, off the training thread."""

    def __init__(self, argv: list[str], timeout: float):
        self.argv, self.timeout = argv, timeout
        self.failure: str | None = None
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="xp-monitor-notify", daemon=True)
        self._thread.start()

    def send(self, payload: dict[str, Any]) -> None:
        self._queue.put(payload)

    def _work(self) -> None:
        while (payload := self._queue.get()) is not None:
            try:
                done = subprocess.run(
                    self.argv, input=json.dumps(payload), text=True, capture_output=True,
                    timeout=self.timeout, check=False,
                )  # fmt: skip
                if done.returncode != 0 and self.failure is None:
                    last = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
                    self.failure = f"exit {done.returncode}: {last[0][:200]}".rstrip(": ")
            except subprocess.TimeoutExpired:
                self.failure = self.failure or f"no answer within {self.timeout:g} s"
            except OSError as exc:
                self.failure = self.failure or f"{type(exc).__name__}: {exc}"

    def close(self) -> None:
        """Wait for the events queued so far, each bounded by the timeout."""
        self._queue.put(None)
        self._thread.join(timeout=self.timeout * (self._queue.qsize() + 2))


class Watch:
    """The monitor of one run, wired to its record."""

    def __init__(
        self,
        settings: MonitorConfig,
        tracker: Any,
        run_dir: Path,
        warmup_steps: int,
        say: Callable[[str], None],
        state: dict | None = None,
    ):
        self.settings, self.tracker, self.say = settings, tracker, say
        self.monitor = Monitor(settings, warmup_steps, (state or {}).get("rules"))
        self.journal = run_dir / "monitor" / "events.jsonl"
        # a resumed run: what it raised before is kept, not raised again. The checkpoint holds
        # the events up to it (a run resumed on another machine, from the checkpoint it logged,
        # has no journal); the journal, where it is, those since.
        self.events: list[dict[str, Any]] = list((state or {}).get("events", []))
        self.seen = {(e["kind"], e["step"]) for e in self.events}
        if self.journal.exists():
            for line in self.journal.read_text().splitlines():
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:  # (a line cut by a kill: its event replays)
                    continue
                if (event["kind"], event["step"]) not in self.seen:
                    self.events.append(event)
                    self.seen.add((event["kind"], event["step"]))
        self.events.sort(key=lambda e: e["step"])
        argv = check_notify(settings)
        self.notifier = _Notifier(argv, settings.notify_timeout) if argv else None
        self.notify_said = False

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps: the rules' state and the events so far."""
        return {"rules": self.monitor.state_dict(), "events": list(self.events)}

    def step(self, step: int, loss: float, grad_norm: float | None) -> Event | None:
        """Watch one optimizer step (`grad_norm` None: the step was skipped, as a GradScaler
        skips an overflow); returns the event that stops the run, if one does."""
        if not self.settings.enabled:
            return None
        return self._handle(self.monitor.on_step(step, loss, grad_norm))

    def evaluation(self, step: int, improved: bool) -> Event | None:
        if not self.settings.enabled:
            return None
        return self._handle(self.monitor.on_eval(step, improved))

    def _handle(self, raised: list[Event]) -> Event | None:
        stop = None
        for event in raised:
            if (event.kind, event.step) not in self.seen:  # (else replayed after a resume)
                self._raise(event)
            self._record(event)
            if getattr(self.settings, f"on_{event.kind}") == "stop" and stop is None:
                stop = event
        self._say_notify_failure()
        return stop

    def _raise(self, event: Event) -> None:
        """Journal the event first, then say it and send it on."""
        payload = {**event.to_json(), "run_id": self.tracker.run_id}  # (NaN, inf: null)
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        with open(self.journal, "a") as f:
            f.write(json.dumps(payload) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.events.append(payload)
        self.seen.add((event.kind, event.step))
        self.say(f"monitor: {event.message}")
        if self.notifier is not None:
            self.notifier.send(payload)
        supervise.fault_point("monitor_event", event.step)

    def _record(self, event: Event) -> None:
        """The event's count and the first event's tag: the same values when a resumed run
        replays it (the store keeps a point once)."""
        count = sum(e["kind"] == event.kind and e["step"] <= event.step for e in self.events)
        self.tracker.log_metrics({f"monitor/{event.kind}": float(count)}, event.step)
        if self.events[0]["kind"] == event.kind and self.events[0]["step"] == event.step:
            self.tracker.set_tags({"xp.monitor.first": event.message})

    def _say_notify_failure(self) -> None:
        if self.notifier is None or self.notify_said or self.notifier.failure is None:
            return
        self.notify_said = True
        self.say(f"monitor.notify failed ({self.notifier.failure}); training goes on")
        self.tracker.set_tags({"xp.monitor.notify_error": self.notifier.failure})

    def counts(self) -> dict[str, int]:
        return {kind: sum(e["kind"] == kind for e in self.events) for kind in KINDS}

    def close(self) -> None:
        """Wait for the notifications queued so far (each bounded): a run killed by a signal
        sends what it raised before it goes."""
        if self.notifier is not None:
            self.notifier.close()
            self._say_notify_failure()
            self.notifier = None

    def finish(self, step: int) -> None:
        """Every kind's count at the last step, the journal as `monitor/events.json`."""
        if not self.settings.enabled:
            self.tracker.set_tags({"xp.monitor.events": "off"})
            return
        self.close()
        counts = self.counts()
        self.tracker.log_metrics({f"monitor/{k}": float(v) for k, v in counts.items()}, step)
        self.tracker.set_tags({"xp.monitor.events": str(sum(counts.values()))})
        record = {"counts": counts, "events": self.events}
        self.tracker.log_text(json.dumps(record, indent=1), "monitor/events.json")
