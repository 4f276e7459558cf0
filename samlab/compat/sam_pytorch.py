"""``SAMSGD``: moskomule/sam.pytorch's optimizer on samlab's SAM.

Seed usage (unchanged but for the import)::

    from samlab.compat import SAMSGD          # was: from sam import SAMSGD

    optimizer = SAMSGD(model.parameters(), lr=1e-1, rho=0.05)
    for input, target in dataset:
        def closure():
            optimizer.zero_grad()
            output = model(input)
            loss = loss_f(output, target)
            loss.backward()
            return loss
        loss = optimizer.step(closure)

``step(closure)`` evaluates the closure at ``w`` (the returned loss), perturbs by
``e = rho * g / ||g||``, evaluates it again at ``w + e``, restores ``w`` and takes an SGD step
(momentum, dampening, Nesterov, coupled weight decay) with the gradient at ``w + e``.

.. note::
   Differences from the seed (bugs there, the correct thing here): the normaliser has an eps
   (``||g|| + 1e-12``; the seed divides by ``||g||`` and a zero gradient turns the weights into
   NaN); several param groups work (the seed raises "Not supported"); ``rho=0`` is plain SGD
   (the seed refuses it); ``state_dict`` holds SGD's momentum buffers as before and the
   perturbation state. BatchNorm running statistics are updated in both passes, as in the seed
   (``samlab.train.make_closure`` offers a policy).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from samlab.optim import SAM

__all__ = ["SAMSGD"]


class SAMSGD(SAM):
    """``SAMSGD(params, lr, momentum=0, dampening=0, weight_decay=0, nesterov=False,
    rho=0.05)``: SAM around ``torch.optim.SGD`` with the seed's signature."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        rho: float = 0.05,
    ) -> None:
        super().__init__(
            params,
            torch.optim.SGD,
            rho=rho,
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
        )
