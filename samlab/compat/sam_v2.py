"""``SAM(..., v2=True)``: jjsrf/SSAM-NEURIPS2024's "SAM.v2" (S²-SAM) on samlab's one-step SAM.

Seed usage (unchanged but for the import)::

    from samlab.compat.sam_v2 import SAM      # was: from sam import SAM

    optimizer = SAM(model.parameters(), torch.optim.SGD, rho=0.05, adaptive=False, v2=True,
                    lr=0.1, momentum=0.9, weight_decay=5e-4)
    for inputs, targets in loader:
        optimizer.zero_grad()
        optimizer.first_step(zero_grad=True)   # perturb with the previous step's gradient
        loss = criterion(model(inputs), targets)
        loss.backward()                        # the step's only pass, at w + e
        optimizer.second_step(zero_grad=True)  # restore w, keep the gradient, base step

One step: ``e_t = rho * g_{t-1} / (||g_{t-1}|| + 1e-12)`` (``e_0 = 0``), ``g_t`` = the gradient at
``w_t + e_t``, ``w_{t+1}`` = the base step from ``w_t`` with ``g_t``; ``g_t`` is kept for the next
step. ``v2=False`` gives the classic two-pass loop (davda54/sam's: backward at ``w``,
``first_step``, backward at ``w + e``, ``second_step``).

.. note::
   Differences from the seed, whose behaviour is a bug here: the seed reads the kept gradient
   back from ``.grad`` and skips parameters whose ``.grad`` is None; since PyTorch 2.0
   ``zero_grad()`` sets it to None, so the seed's own loop silently runs plain SGD. samlab keeps
   ``g_{t-1}`` in the optimizer state (saved in ``state_dict`` with the base optimizer's
   momentum, which the seed's state_dict omits). ``adaptive=True`` is ASAM's
   ``T = |w|`` scaling (``eta=0``, as davda54/sam; the seed squares the stored gradient instead).
   A parameter without a gradient is skipped (the seed crashes in ``second_step``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from samlab.optim import SAM as TwoPassSAM
from samlab.optim import OneStepSAM

__all__ = ["SAM", "SAMTwoStep", "SAMv2"]


class SAMv2(OneStepSAM):
    """One-step SAM with the seed's call order: ``first_step`` before the forward pass,
    ``second_step`` after its backward."""

    def __init__(self, params, base_optimizer, rho=0.05, adaptive=False, **kwargs):
        super().__init__(params, base_optimizer, rho=rho, adaptive=adaptive, eta=0.0, **kwargs)

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:  # type: ignore[override]
        """Perturb with the kept gradient (nothing at the first step); call before the
        forward pass."""
        self.begin_step()
        if zero_grad:
            self.zero_grad(set_to_none=True)

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:  # type: ignore[override]
        """After the backward at ``w + e``: restore ``w``, keep the gradient, step the base."""
        OneStepSAM.first_step(self)  # books the step's only pass (returns False)
        OneStepSAM.second_step(self, zero_grad)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """The seed's closure path: ``first_step(True)``, ``closure()``, ``second_step()``;
        returns the loss at ``w + e``."""
        if closure is None:
            raise TypeError("SAM.step() needs a closure (zero_grad, forward, backward, loss)")
        self.first_step(zero_grad=True)
        with torch.enable_grad():
            loss = closure()
        self.second_step()
        return loss


class SAMTwoStep(TwoPassSAM):
    """``v2=False``: davda54/sam's two-pass SAM (``first_step`` after the clean backward,
    ``second_step`` after the perturbed one); ``adaptive`` with ``eta=0`` as there."""

    def __init__(self, params, base_optimizer, rho=0.05, adaptive=False, **kwargs):
        super().__init__(params, base_optimizer, rho=rho, adaptive=adaptive, eta=0.0, **kwargs)


def SAM(  # noqa: N802 - the seed's class name
    params: Iterable[Any],
    base_optimizer: type[torch.optim.Optimizer],
    rho: float = 0.05,
    adaptive: bool = False,
    v2: bool = True,
    **kwargs: Any,
) -> SAMv2 | SAMTwoStep:
    """The seed's constructor: :class:`SAMv2` (``v2=True``) or :class:`SAMTwoStep`; ``kwargs``
    go to ``base_optimizer`` (``lr``, ``momentum``, ``weight_decay``, ...)."""
    cls = SAMv2 if v2 else SAMTwoStep
    return cls(params, base_optimizer, rho=rho, adaptive=adaptive, **kwargs)
