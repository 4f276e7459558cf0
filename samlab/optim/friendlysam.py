"""FriendlySAM (F-SAM; Li et al., CVPR 2024): SAM's perturbation from the batch-specific part of
the gradient.

Per step, with ``g_t = grad L(w_t)`` on the minibatch:

    m_t = lmbda * m_{t-1} + (1 - lmbda) * g_t   (m_0 = 0: the EMA estimate of the full gradient)
    d_t = g_t - sigma * m_t                     (the stochastic-gradient-noise component)
    e_t = rho * d_t / (||d_t|| + eps)
    w_{t+1} = base_step(w_t, grad L(w_t + e_t))

``sigma = 0`` is SAM exactly; ``rho = 0`` the base optimizer exactly (one pass). The EMA ``m``
is kept per parameter in ``optimizer.state[p]["grad_ema"]`` (saved by ``state_dict``).
``adaptive=True`` scales the perturbation as ASAM does (``T = |w| + eta``).

.. note::
   This is the paper's rule, ``d_t = g_t - sigma m_t`` with ``m_t`` including ``g_t`` and
   ``m_0 = 0``. The authors' code (nblt/F-SAM, which pytorch-optimizer follows) subtracts the
   previous EMA, ``g_t - sigma m_{t-1}``, and starts the EMA at the first gradient (so its
   first step is SAM). For ``sigma = 1`` the two directions are parallel from the second step
   on (``g - m_t = lmbda (g - m_{t-1})``) and differ only by the EMA's start. The batch
   direction ``d_t`` is written into ``p.grad`` in place after the clean pass.
"""

from __future__ import annotations

from typing import Any

import torch

import kernels
from samlab.optim.sam import SAM, sam_keywords

__all__ = ["FriendlySAM"]


def check_sigma_lmbda(sigma: Any, lmbda: Any, where: str = "") -> None:
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma >= 0:
        raise ValueError(f"sigma{where} must be a number >= 0 (1 in the paper), got {sigma!r}")
    if isinstance(lmbda, bool) or not isinstance(lmbda, (int, float)) or not 0 <= lmbda < 1:
        raise ValueError(f"lmbda{where} (the EMA decay) must be in [0, 1), got {lmbda!r}")


class FriendlySAM(SAM):
    """FriendlySAM wrapping any ``torch.optim`` optimizer (see the module docstring).

    Args beyond :class:`~samlab.optim.SAM`'s:
        sigma: how much of the EMA to subtract (paper: 1; 0 gives SAM). Kept per param group
            as ``"fsam_sigma"``.
        lmbda: the EMA decay (authors' default 0.9; their CIFAR-100 runs use 0.95). Kept per
            param group as ``"fsam_lmbda"``.
    """

    method = "FriendlySAM"

    @sam_keywords()
    def __init__(
        self,
        params,
        base_optimizer=torch.optim.SGD,
        *,
        sigma: float = 1.0,
        lmbda: float = 0.9,
        **options,
    ):
        check_sigma_lmbda(sigma, lmbda)
        super().__init__(params, base_optimizer, **options)
        for group in self.param_groups:
            group.setdefault("fsam_sigma", sigma)
            group.setdefault("fsam_lmbda", lmbda)
        self.defaults.update(fsam_sigma=sigma, fsam_lmbda=lmbda)

    def _first(self) -> bool:
        for group, params, grads in self._grouped():
            if not params:
                continue
            emas = []
            for p, g in zip(params, grads):
                state = self.state[p]
                ema = state.get("grad_ema")
                if ema is None or ema.shape != g.shape:
                    ema = state["grad_ema"] = torch.zeros_like(g)
                emas.append(ema)
            # m <- lmbda m + (1 - lmbda) g; g <- g - sigma m (in place in p.grad)
            kernels.ema_direction_(
                grads, emas, group["fsam_lmbda"], group["fsam_sigma"], impl=self.dispatch
            )
        self._ascent()
        return True
