"""LookSAM (Liu et al., CVPR 2022): SAM's extra gradient only every ``k`` steps.

On steps ``t % k == 0`` (two passes) with ``g`` at ``w`` and ``g_p`` at ``w + e``:

    g_v = g_p - (<g, g_p> / (||g|| ||g_p|| + eps)) * ||g_p|| * g / (||g|| + eps)

(the component of ``g_p`` orthogonal to ``g``) is kept and the base optimizer follows
``g_p``. On the other ``k - 1`` steps only the clean pass runs and the base optimizer follows

    g + alpha * (||g|| / (||g_v|| + eps)) * g_v

so the second forward+backward is really skipped (``first_step()`` returns False and
``step(closure)`` calls the closure once).

.. note::
   pytorch-optimizer's documented usage (``closure(); step(closure)``) runs the closure on
   every step and saves nothing; here the skipped steps cost one pass.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

import kernels
from samlab.optim.sam import GradientPairSAM, sam_keywords

__all__ = ["LookSAM"]


class LookSAM(GradientPairSAM):
    """LookSAM with refresh period ``k`` and reuse weight ``alpha`` (paper: k=5, alpha=0.7)."""

    method = "LookSAM"
    alpha_key = "looksam_alpha"

    @sam_keywords()
    def __init__(
        self, params, base_optimizer=torch.optim.SGD, *, k: int = 5, alpha: float = 0.7, **options
    ):
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k (refresh period) must be an integer >= 1, got {k!r}")
        self.k = k
        super().__init__(params, base_optimizer, alpha, **options)

    def _extra_state(self) -> dict[str, Any]:
        return {"k": self.k}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        if state.get("k", self.k) != self.k:
            raise ValueError(
                f"LookSAM.load_state_dict: the state_dict was saved with k={state['k']}, this "
                f"optimizer has k={self.k}; build LookSAM(..., k={state['k']}) to resume"
            )

    def _begin(self) -> None:
        super()._begin()
        # one pass between refreshes (and before the first refresh has stored g_v)
        self.single_pass = self.single_pass or self._step_index % self.k != 0

    def _finish(self) -> None:
        params = self._all_params_with_grad()
        if not params:
            return
        impl = self.dispatch
        eps = self.param_groups[0]["perturb_eps"]
        if self.single_pass:
            self._reuse(params, impl, eps)
        else:
            self._refresh(params, impl, eps)

    def _refresh(self, params: list[Tensor], impl: kernels.Dispatch, eps: float) -> None:
        clean = self._clean_grads
        self._clean_grads = {}
        params = [p for p in params if p in clean]
        g = [clean[p] for p in params]
        g_p = [p.grad for p in params]
        norm_g, norm_gp, inner = kernels.pair_stats(g, g_p, impl=impl)
        cos = inner / (norm_g * norm_gp + eps)
        coef = cos * norm_gp / (norm_g + eps)
        g_v = []
        for p, gpi in zip(params, g_p):
            state = self.state[p]
            if "g_v" not in state or state["g_v"].shape != gpi.shape:
                state["g_v"] = torch.empty_like(gpi)
            g_v.append(state["g_v"])
        kernels.axpy_(g_v, g_p, g, -coef, impl=impl)  # g_v = g_p - coef * g

    def _reuse(self, params: list[Tensor], impl: kernels.Dispatch, eps: float) -> None:
        params = [p for p in params if "g_v" in self.state[p]]
        if not params:
            return
        g = [p.grad for p in params]
        g_v = [self.state[p]["g_v"] for p in params]
        norm_g, norm_gv, _ = kernels.pair_stats(g, g_v, impl=impl)
        factor = norm_g / (norm_gv + eps)
        for group in self.param_groups:
            alpha = group["looksam_alpha"]
            ps = [p for p in group["params"] if p.grad is not None and "g_v" in self.state[p]]
            if alpha == 0 or not ps:
                continue
            grads = [p.grad for p in ps]
            # g <- g + alpha * (||g|| / ||g_v||) * g_v
            kernels.axpy_(
                grads, grads, [self.state[p]["g_v"] for p in ps], alpha * factor, impl=impl
            )
