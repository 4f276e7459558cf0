"""Schedules for GSAM's radius ``rho_t`` (Zhuang et al., ICLR 2022).

``GSAM`` consults its schedule once per step with the current learning rate of each param
group: ``rho_t = schedule(lr)``, then calls ``schedule.step()`` after the base step.

* :class:`ProportionalRho` ties rho to the learning rate (the paper's choice):
  ``(rho_t - rho_min) / (rho_max - rho_min) = (lr_t - lr_min) / (lr_max - lr_min)``.
* :class:`LinearRho`, :class:`CosineRho`, :class:`PolynomialRho` follow the step count like
  the official code's schedulers (linear warm-up from ``rho_init`` over ``warmup_steps``, then
  from ``rho_max`` to ``rho_min`` over the remaining ``total_steps``), so they mirror an LR
  schedule of the same shape.

.. note::
   The official schedulers are not clamped past ``T_max`` (linear goes negative, cosine climbs
   back) and advance once at construction; samlab clamps to ``rho_min`` after
   ``total_steps`` and starts at step 0. Every schedule has ``state_dict`` /
   ``load_state_dict``, which ``GSAM.state_dict()`` includes.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

__all__ = ["CosineRho", "LinearRho", "PolynomialRho", "ProportionalRho", "RhoSchedule"]


def _check(rho_max: float, rho_min: float) -> None:
    for name, value in (("rho_max", rho_max), ("rho_min", rho_min)):
        if not value >= 0:
            raise ValueError(f"{name} must be >= 0, got {value!r}")


class RhoSchedule:
    """Base class: ``__call__(lr) -> rho`` and a step counter kept in ``state_dict``."""

    def __init__(self) -> None:
        self.step_count = 0

    def __call__(self, lr: float, initial_lr: float | None = None) -> float:  # pragma: no cover
        raise NotImplementedError

    def step(self) -> None:
        self.step_count += 1

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unknown = set(state) - set(vars(self))
        if unknown:
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: unknown keys {sorted(unknown)}; was "
                "the state saved from another schedule class?"
            )
        vars(self).update(state)


class ProportionalRho(RhoSchedule):
    """``rho_t = rho_min + (rho_max - rho_min) * (lr_t - lr_min) / (lr_max - lr_min)``.

    ``lr_max`` defaults to the param group's ``initial_lr`` (set by every torch LR scheduler:
    the peak of a warm-up + decay schedule), else to the largest learning rate seen so far.
    """

    def __init__(
        self, rho_max: float, rho_min: float = 0.0, lr_max: float | None = None, lr_min: float = 0.0
    ) -> None:
        super().__init__()
        _check(rho_max, rho_min)
        self.rho_max, self.rho_min = float(rho_max), float(rho_min)
        self.lr_max = None if lr_max is None else float(lr_max)
        self._given_lr_max = self.lr_max
        self.lr_min = float(lr_min)

    def __call__(self, lr: float, initial_lr: float | None = None) -> float:
        lr = float(lr)
        if initial_lr is not None and self._given_lr_max is None:
            self.lr_max = float(initial_lr)
        elif self.lr_max is None or (self._given_lr_max is None and lr > self.lr_max):
            self.lr_max = lr
        span = self.lr_max - self.lr_min
        if span <= 0:
            return self.rho_max
        ratio = min(max((float(lr) - self.lr_min) / span, 0.0), 1.0)
        return self.rho_min + (self.rho_max - self.rho_min) * ratio


class _StepSchedule(RhoSchedule):
    def __init__(
        self,
        rho_max: float,
        rho_min: float = 0.0,
        total_steps: int = 1,
        warmup_steps: int = 0,
        rho_init: float = 0.0,
    ) -> None:
        super().__init__()
        _check(rho_max, rho_min)
        if total_steps < 1 or warmup_steps < 0 or warmup_steps > total_steps:
            raise ValueError(
                f"need total_steps >= 1 and 0 <= warmup_steps <= total_steps, got "
                f"total_steps={total_steps}, warmup_steps={warmup_steps}"
            )
        self.rho_max, self.rho_min, self.rho_init = float(rho_max), float(rho_min), float(rho_init)
        self.total_steps, self.warmup_steps = int(total_steps), int(warmup_steps)

    def _shape(self, progress: float) -> float:  # 1 at progress 0, 0 at progress 1
        raise NotImplementedError  # pragma: no cover

    def __call__(self, lr: float, initial_lr: float | None = None) -> float:
        t = self.step_count
        if t < self.warmup_steps:
            return self.rho_init + (self.rho_max - self.rho_init) * t / self.warmup_steps
        decay_steps = max(self.total_steps - self.warmup_steps, 1)
        progress = min((t - self.warmup_steps) / decay_steps, 1.0)
        return self.rho_min + (self.rho_max - self.rho_min) * self._shape(progress)


class LinearRho(_StepSchedule):
    """Linear from ``rho_max`` to ``rho_min`` over ``total_steps`` (after warm-up)."""

    def _shape(self, progress: float) -> float:
        return 1.0 - progress


class CosineRho(_StepSchedule):
    """Half-cosine from ``rho_max`` to ``rho_min`` over ``total_steps`` (after warm-up)."""

    def _shape(self, progress: float) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * progress))


class PolynomialRho(_StepSchedule):
    """``(1 - progress) ** power`` from ``rho_max`` to ``rho_min`` (after warm-up)."""

    def __init__(
        self, rho_max, rho_min=0.0, total_steps=1, warmup_steps=0, rho_init=0.0, power=2.0
    ):  # its signature, annotated, is the step schedules' and ``power: float`` (below)
        super().__init__(rho_max, rho_min, total_steps, warmup_steps, rho_init)
        if not power > 0:
            raise ValueError(f"power must be positive, got {power!r}")
        self.power = float(power)

    __init__.__signature__ = inspect.signature(_StepSchedule.__init__).replace(
        parameters=[
            *inspect.signature(_StepSchedule.__init__).parameters.values(),
            inspect.Parameter(
                "power", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=2.0, annotation="float"
            ),
        ]
    )

    def _shape(self, progress: float) -> float:
        return (1.0 - progress) ** self.power
