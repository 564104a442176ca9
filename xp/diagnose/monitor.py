"""The training monitor: rules relative to the run's own history, never absolute thresholds.

Fed every logged step (training loss, gradient norm) and every evaluation, it raises:

- `spike`: the loss's robust z-score against its rolling median and MAD (scaled by 1.4826 to a
  normal standard deviation, as scipy's `median_abs_deviation(scale="normal")`, here with the
  standard library's median: scipy's call costs 0.4 ms a step, this 10 us) above
  `monitor.spike_z`;
- `grad`: the gradient norm (before clipping) above `monitor.grad_factor` times its rolling median,
  or not finite;
- `divergence`: the loss not finite, or the median of the last few losses above
  `monitor.divergence_factor` times the lowest level it reached after warm-up (a slow climb, not
  one bad batch); that level is floored at a twentieth of the level just after warm-up, so a
  loss near zero is not judged by its noise;
- `stall`: `monitor.stall_evals` evaluations in a row without a validation improvement.

An event is raised once per episode: a rule that keeps firing on the next steps is the same
event. The state is a plain dict, saved with a checkpoint, so a resumed run carries on exactly.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from xp.config import MonitorConfig

KINDS = ("spike", "grad", "divergence", "stall")
MAD_TO_SD = 1.4826  # a normal distribution's standard deviation over its MAD
RECENT = 5  # losses whose median the divergence rule compares (one bad batch is a spike)
FLOOR = 0.05  # the divergence reference never falls below this share of the post-warm-up level


@dataclass
class Event:
    kind: str  # spike | grad | divergence | stall
    step: int
    value: float  # what was measured (loss, grad norm, z-score, evaluations)
    reference: float  # what it was measured against
    message: str

    def to_json(self) -> dict[str, Any]:
        """As strict JSON: a value that is not finite (a NaN loss) is null."""
        return {k: None if isinstance(v, float) and not math.isfinite(v) else v
                for k, v in asdict(self).items()}  # fmt: skip


def _median(values: Iterable[float]) -> float:
    return float(statistics.median(values))


class Monitor:
    """One run's monitor (see the module's docstring)."""

    def __init__(self, settings: MonitorConfig, warmup_steps: int, state: dict | None = None):
        self.settings = settings
        self.warmup_steps = warmup_steps
        s = settings
        self.losses: deque[float] = deque(maxlen=s.window)
        self.grads: deque[float] = deque(maxlen=s.window)
        self.after_warmup: list[float] = []  # the first losses after warm-up (the level)
        self.reference: float | None = None  # the level just after warm-up
        self.lowest: float | None = None  # the lowest level since
        self.active: dict[str, bool] = dict.fromkeys(KINDS, False)  # in an episode now
        self.bad_evals = 0
        if state:
            self.losses.extend(state["losses"])
            self.grads.extend(state["grads"])
            self.after_warmup = list(state["after_warmup"])
            self.reference = state["reference"]
            self.lowest = state["lowest"]
            self.active.update(state["active"])
            self.bad_evals = state["bad_evals"]

    def state_dict(self) -> dict[str, Any]:
        return {"losses": list(self.losses), "grads": list(self.grads),
                "after_warmup": list(self.after_warmup), "reference": self.reference,
                "lowest": self.lowest,
                "active": dict(self.active), "bad_evals": self.bad_evals}  # fmt: skip

    def _raise(self, kind: str, firing: bool, event: Event | None) -> list[Event]:
        """An event on the first step of an episode of `kind`, none while it goes on."""
        was = self.active[kind]
        self.active[kind] = firing
        return [event] if firing and not was and event is not None else []

    def on_step(self, step: int, loss: float, grad_norm: float | None) -> list[Event]:
        """The events of one optimizer step (`grad_norm` None: a step the optimizer skipped, as
        a GradScaler does on an fp16 overflow: no gradient to judge)."""
        s = self.settings
        out: list[Event] = []
        if not math.isfinite(loss):
            out += self._raise("divergence", True, Event(
                "divergence", step, loss, self.reference or math.nan,
                f"divergence at step {step}: the loss is {loss}"))  # fmt: skip
            return out
        if len(self.losses) >= s.min_history:
            out += self._spike(step, loss)
        if grad_norm is not None and (len(self.grads) >= s.min_history
                                      or not math.isfinite(grad_norm)):  # fmt: skip
            out += self._grad(step, grad_norm)
        self.losses.append(loss)
        if grad_norm is not None and math.isfinite(grad_norm):
            self.grads.append(grad_norm)
        if step > self.warmup_steps and self.reference is None:
            self.after_warmup.append(loss)
            if len(self.after_warmup) >= s.min_history:
                self.reference = _median(self.after_warmup)
        if self.reference is not None and len(self.losses) >= RECENT:
            out += self._divergence(step, _median(self.losses[-i] for i in range(1, RECENT + 1)))
        return out

    def _divergence(self, step: int, recent: float) -> list[Event]:
        assert self.reference is not None
        self.lowest = recent if self.lowest is None else min(self.lowest, recent)
        base = max(self.lowest, FLOOR * self.reference)
        ratio = recent / base if base > 0 else math.inf
        return self._raise("divergence", ratio > self.settings.divergence_factor, Event(
            "divergence", step, recent, base,
            f"divergence at step {step}: the loss's recent median {recent:.4g} is {ratio:.1f}x "
            f"the lowest level it reached after warm-up ({base:.4g})"))  # fmt: skip

    def _spike(self, step: int, loss: float) -> list[Event]:
        med = _median(self.losses)
        mad = MAD_TO_SD * _median(abs(x - med) for x in self.losses)
        spread = max(mad, 1e-3 * abs(med), 1e-12)  # (a flat loss has no spread to speak of)
        z = (loss - med) / spread
        return self._raise("spike", z > self.settings.spike_z, Event(
            "spike", step, loss, med,
            f"loss spike at step {step}: {loss:.4g} against a rolling median of {med:.4g} "
            f"(robust z {z:.1f} > {self.settings.spike_z:g})"))  # fmt: skip

    def _grad(self, step: int, grad_norm: float) -> list[Event]:
        med = _median(self.grads) if self.grads else math.nan
        firing = not math.isfinite(grad_norm) or grad_norm > self.settings.grad_factor * med
        ratio = grad_norm / med if med > 0 else math.inf
        return self._raise("grad", firing, Event(
            "grad", step, grad_norm, med,
            f"gradient explosion at step {step}: norm {grad_norm:.4g} is {ratio:.1f}x its "
            f"rolling median {med:.4g}"))  # fmt: skip

    def on_eval(self, step: int, improved: bool) -> list[Event]:
        """The events of one evaluation (`improved`: the validation metric got better)."""
        n = self.settings.stall_evals
        self.bad_evals = 0 if improved else self.bad_evals + 1
        if n is None:
            return []
        return self._raise("stall", self.bad_evals >= n, Event(
            "stall", step, self.bad_evals, n,
            f"stall at step {step}: {self.bad_evals} evaluations without a validation "
            f"improvement"))  # fmt: skip
