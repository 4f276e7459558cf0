"""GSAM with juntang-zhuang/GSAM's API, on samlab's GSAM; its schedulers.

Seed usage (unchanged but for the import)::

    from samlab.compat.gsam import GSAM, LinearScheduler   # was: from gsam import ...

    base_optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9,
                                     weight_decay=5e-4)
    lr_scheduler = LinearScheduler(T_max=epochs * len(loader), max_value=0.1,
                                   min_value=0.001, optimizer=base_optimizer)
    rho_scheduler = LinearScheduler(T_max=epochs * len(loader), max_value=0.04,
                                    min_value=0.02)
    optimizer = GSAM(params=model.parameters(), base_optimizer=base_optimizer, model=model,
                     gsam_alpha=0.01, rho_scheduler=rho_scheduler, adaptive=False)
    for inputs, targets in loader:
        optimizer.set_closure(loss_fn, inputs, targets)
        predictions, loss = optimizer.step()
        lr_scheduler.step()
        optimizer.update_rho_t()

Per step (Zhuang et al., ICLR 2022): ``g`` at ``w``; ``e = rho_t g / (||g|| + eps)`` (adaptive:
ASAM's ``|w|``-weighted norm and ``w^2`` scaling, as the seed); ``g_p`` at ``w + e`` with
BatchNorm running statistics frozen; ``g_perp = g - cos(g, g_p) ||g|| g_p / ||g_p||``; the base
optimizer steps with ``g_p - alpha * g_perp`` from ``w``. ``step()`` returns the clean pass's
``(predictions, loss)``.

.. note::
   Differences from the seed (bugs there, the correct thing here):

   * The learning rate and rho follow the same step index: a :class:`LinearScheduler` /
     :class:`CosineScheduler` given ``optimizer=`` writes its first value at construction and
     each ``step()`` writes the next one, so step ``k`` trains with the schedule's value ``k``
     for both. The seed's lr schedule starts one step late (step 0 uses the optimizer's own lr,
     skipping any warm-up start value) while its rho schedule does not.
   * Past ``T_max`` the schedules stay at ``min_value`` (the seed's linear schedule goes
     negative, its cosine climbs back up). The README's ``warmup_step=`` keyword is accepted
     (the seed's constructor only knows ``warmup_steps`` and raises ``TypeError``).
   * :class:`ProportionScheduler` reads the torch scheduler's ``get_last_lr()[0]`` (the seed
     does arithmetic on the list).
   * ``state_dict()`` includes the base optimizer's momentum buffers (the seed's omits them).
   * Under ``torch.distributed`` the clean pass runs under ``no_sync`` (per-worker
     perturbations) and the perturbed pass all-reduces as DDP does (the seed runs both passes
     without sync and all-reduces the final gradient tensor by tensor); ``grad_reduce`` is
     checked and recorded.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from samlab.compat.instance import adopt_instance, check_instance, same_params
from samlab.optim import GSAM as SamlabGSAM
from samlab.optim import CosineRho, LinearRho, ProportionalRho, RhoSchedule
from samlab.train import SAMClosure

__all__ = ["CosineScheduler", "GSAM", "LinearScheduler", "ProportionScheduler"]

GRAD_REDUCE = ("mean", "sum")


class _StepScheduler:
    """The seed's ``SchedulerBase`` on a samlab step schedule: ``value`` (this step's),
    ``step()`` (advance; returns and, with ``optimizer``, writes the next step's value)."""

    schedule_class: type[RhoSchedule]

    def __init__(
        self,
        T_max: int,  # noqa: N803 - the seed's names
        max_value: float,
        min_value: float = 0.0,
        init_value: float = 0.0,
        warmup_steps: int = 0,
        optimizer: torch.optim.Optimizer | None = None,
        warmup_step: int | None = None,
    ) -> None:
        if warmup_step is not None:
            warmup_steps = warmup_step
        if not math.isfinite(max_value) or not math.isfinite(min_value):
            raise ValueError(
                f"max_value and min_value must be finite, got {max_value}, {min_value}"
            )
        self.schedule = self.schedule_class(
            max_value, min_value, total_steps=T_max, warmup_steps=warmup_steps, rho_init=init_value
        )
        self.optimizer = optimizer
        self._apply()

    @property
    def t(self) -> int:
        return self.schedule.step_count

    @property
    def value(self) -> float:
        """This step's value."""
        return self.schedule(0.0)

    def _apply(self) -> float:
        value = self.value
        if self.optimizer is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = value
        return value

    def step(self) -> float:
        """Advance one step; the new step's value (written as the lr of every group of
        ``optimizer`` when given)."""
        self.schedule.step()
        return self._apply()


class LinearScheduler(_StepScheduler):
    """``LinearScheduler(T_max, max_value, min_value=0.0, init_value=0.0, warmup_steps=0,
    optimizer=None)``: linear warm-up from ``init_value``, then linear to ``min_value`` at
    ``T_max``, constant after."""

    schedule_class = LinearRho


class CosineScheduler(_StepScheduler):
    """As :class:`LinearScheduler` with a half-cosine decay."""

    schedule_class = CosineRho


class ProportionScheduler:
    """``ProportionScheduler(pytorch_lr_scheduler, max_lr, min_lr, max_value, min_value)``:
    ``(value - min_value) / (max_value - min_value) = (lr - min_lr) / (max_lr - min_lr)`` with
    the lr of a torch LR scheduler (constant ``max_value`` when ``max_lr == min_lr``)."""

    def __init__(self, pytorch_lr_scheduler, max_lr, min_lr, max_value, min_value) -> None:
        if not (max_lr > min_lr or (max_lr == min_lr and max_value == min_value)):
            raise ValueError(
                "ProportionScheduler needs max_lr > min_lr, or max_lr == min_lr with "
                f"max_value == min_value; got max_lr={max_lr}, min_lr={min_lr}, "
                f"max_value={max_value}, min_value={min_value}"
            )
        if max_value < min_value:
            raise ValueError(f"max_value must be >= min_value, got {max_value} < {min_value}")
        self.pytorch_lr_scheduler = pytorch_lr_scheduler
        self.schedule = ProportionalRho(max_value, min_value, lr_max=max_lr, lr_min=min_lr)
        self.t = 0

    @property
    def value(self) -> float:
        return self.schedule(float(self.pytorch_lr_scheduler.get_last_lr()[0]))

    def step(self) -> float:
        self.t += 1
        return self.value


class CurrentRho(RhoSchedule):
    """The radius the compat GSAM set last (``value``), as samlab's GSAM consults it."""

    def __init__(self, value: float = 0.0) -> None:
        super().__init__()
        self.value = float(value)

    def __call__(self, lr: float, initial_lr: float | None = None) -> float:
        return self.value


class GSAM(SamlabGSAM):
    """``GSAM(params, base_optimizer, model, gsam_alpha, rho_scheduler, adaptive=False,
    perturb_eps=1e-12, grad_reduce="mean")`` with an already-built ``base_optimizer`` (its
    param groups, learning rates and state are the ones used; ``params`` must be the same
    parameters)."""

    def __init__(
        self,
        params: Any,
        base_optimizer: torch.optim.Optimizer,
        model: torch.nn.Module,
        gsam_alpha: float,
        rho_scheduler: Any,
        adaptive: bool = False,
        perturb_eps: float = 1e-12,
        grad_reduce: str = "mean",
    ) -> None:
        check_instance("GSAM", base_optimizer)
        if grad_reduce not in GRAD_REDUCE:
            raise ValueError(f"grad_reduce must be one of {GRAD_REDUCE}, got {grad_reduce!r}")
        same_params("GSAM", params, base_optimizer)
        self.model, self.rho_scheduler, self.grad_reduce = model, rho_scheduler, grad_reduce
        super().__init__(
            base_optimizer.param_groups,  # the same dicts: schedules on base_optimizer reach us
            type(base_optimizer),
            alpha=gsam_alpha,
            rho_schedule=CurrentRho(),
            adaptive=adaptive,
            eta=0.0,
            perturb_eps=perturb_eps,
        )
        adopt_instance(self, base_optimizer)  # the user's instance steps and keeps the state
        self.closure: Callable[[], Any] | None = None
        value = getattr(rho_scheduler, "value", None)
        self.rho_t = float(value if value is not None else rho_scheduler.step())
        self.rho_schedule.value = self.rho_t

    @torch.no_grad()
    def update_rho_t(self) -> float:
        """Advance ``rho_scheduler``; the radius of the next step."""
        self.rho_t = float(self.rho_scheduler.step())
        self.rho_schedule.value = self.rho_t
        return self.rho_t

    def set_closure(self, loss_fn, inputs, targets, **kwargs) -> None:
        """The next ``step()``'s passes: ``loss_fn(model(inputs), targets, **kwargs)``, with
        BatchNorm running statistics updated in the clean pass only (as the seed)."""
        per_worker = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.closure = SAMClosure(
            self.model,
            (lambda out, y: loss_fn(out, y, **kwargs)) if kwargs else loss_fn,
            inputs,
            targets,
            self,
            bn_policy="clean",
            perturbation="per_worker" if per_worker else "global",
        )

    def step(self, closure: Callable[[], Any] | None = None, **options: Any):  # type: ignore[override]
        """One GSAM step on the closure of :meth:`set_closure` (or ``closure``, returning
        ``(outputs, loss)`` as the seed's or just the loss); returns ``(outputs, loss)`` of the
        clean pass."""
        if closure is None:
            if self.closure is None:
                raise RuntimeError("call set_closure(loss_fn, inputs, targets) before step()")
            loss = super().step(self.closure, **options)
            return self.closure.last_outputs, loss
        seen: dict[str, Any] = {}

        def unpacked():
            result = closure()
            if isinstance(result, tuple) and len(result) == 2:
                seen.setdefault("outputs", result[0])
                return result[1]
            return result

        loss = super().step(unpacked, **options)
        return seen.get("outputs"), loss
