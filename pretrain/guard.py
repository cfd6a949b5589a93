"""When a step is bad, and how many roll-backs a run may take: plain rules, no torch.

A step is bad when its loss is not finite (found by the trainer on the device), when its loss
spikes (:class:`SpikeRule`: above ``factor`` times the median of the last ``window`` logged
losses), or, under fp16, when the loss scale has sat at its minimum for ``steps`` steps in a row
(:class:`ScaleRule`: the scaler has given up finding a scale at which gradients are finite). With
``train.on_nonfinite: rollback`` the trainer then reloads its newest checkpoint, skips the bad step's
global batch and goes on; :class:`RollbackBudget` stops a run that keeps needing that.
"""

from __future__ import annotations

import statistics
from collections import deque


class BadStep(RuntimeError):
    """A step the run must not keep: ``step``, and what was wrong with it."""

    def __init__(self, step: int, reason: str, advice: str = ""):
        super().__init__(f"{reason} at step {step}" + (f": {advice}" if advice else ""))
        self.step, self.reason = step, reason


class RollbackLimit(RuntimeError):
    """More roll-backs than ``train.max_rollbacks`` within ``train.rollback_window`` steps."""


class RollbackFailed(RuntimeError):
    """A roll-back could not reload a checkpoint on every rank."""


# A run that stops on a bad step (train.on_nonfinite: stop), one roll-back too many, or a roll-back that
# could not reload: every rank raises it at the same step.
RUN_STOPPED = (BadStep, RollbackLimit, RollbackFailed)


class SpikeRule:
    """A logged loss above ``factor`` times the median of the ``window`` logged before it; off at
    ``factor`` 0, and until ``min(window, 10)`` losses have been seen."""

    def __init__(self, factor: float, window: int):
        self.factor, self.window = factor, window
        self.losses: dict[int, float] = {}

    def spiked(self, step: int, loss: float) -> bool:
        """Whether ``loss`` at ``step`` is a spike; a loss that is not one joins the window."""
        if not self.factor:
            return False
        recent = [self.losses[s] for s in sorted(self.losses)[-self.window:]]
        if len(recent) >= min(self.window, 10) and loss > self.factor * statistics.median(recent):
            return True
        self.losses[step] = loss
        for old in sorted(self.losses)[:-self.window]:
            del self.losses[old]
        return False

    def forget_after(self, step: int) -> None:
        """Drop the losses of steps after ``step`` (they are trained again after a roll-back)."""
        self.losses = {s: v for s, v in self.losses.items() if s <= step}


class ScaleRule:
    """fp16: the loss scale at (or below) ``minimum`` for ``steps`` steps in a row; off at ``steps`` 0."""

    def __init__(self, steps: int, minimum: float):
        self.steps, self.minimum = steps, minimum
        self.run = 0

    def stuck(self, scale: float) -> bool:
        if not self.steps:
            return False
        self.run = self.run + 1 if scale <= self.minimum else 0
        return self.run >= self.steps

    def reset(self) -> None:
        self.run = 0


class RollbackBudget:
    """At most ``most`` roll-backs whose bad steps lie within any ``window`` consecutive steps."""

    def __init__(self, most: int, window: int):
        self.most, self.window = most, window
        self.steps: deque[int] = deque()

    def take(self, bad: BadStep) -> None:
        """Count a roll-back for ``bad``; :class:`RollbackLimit` when it is one too many."""
        self.steps.append(bad.step)
        while self.steps and self.steps[0] <= bad.step - self.window:
            self.steps.popleft()
        if len(self.steps) > self.most:
            earlier = ", ".join(str(s) for s in list(self.steps)[:-1])
            raise RollbackLimit(
                f"{bad}; this would be roll-back {len(self.steps)} within {self.window} steps (bad steps "
                f"{earlier} were rolled back and skipped), more than train.max_rollbacks={self.most}: the run "
                "stops. Steps keep going bad: lower optim.lr or raise optim.warmup_steps, use bf16 rather than "
                "fp16, or look at the data of those steps (the skipped samples are in metrics.jsonl); to go on "
                "as it is, raise train.max_rollbacks")
