"""GSAM: surrogate-gap guided SAM (Zhuang et al., ICLR 2022).

Per step, with clean gradient ``g`` at ``w`` and ``g_p`` at ``w + e`` (``e`` as in SAM/ASAM
with radius ``rho_t``):

    cos   = <g, g_p> / (||g|| ||g_p|| + eps)
    g_perp = g - cos * ||g|| * g_p / (||g_p|| + eps)       (component of g orthogonal to g_p)
    final = g_p - alpha * g_perp

which is the sign of the official code (descending ``g_p`` while ascending the surrogate gap
along ``g_perp``). ``alpha = 0`` with constant rho is SAM exactly. ``rho_t`` comes from a
``rho_schedule`` (see :mod:`samlab.optim.rho_schedule`) consulted with each group's current
learning rate, or is the constant ``rho``.
"""

from __future__ import annotations

from typing import Any

import torch

import kernels
from samlab.optim.rho_schedule import RhoSchedule
from samlab.optim.sam import GradientPairSAM, sam_keywords

__all__ = ["GSAM"]


class GSAM(GradientPairSAM):
    """GSAM wrapping any ``torch.optim`` optimizer (see the module docstring for the rule).

    Args beyond :class:`~samlab.optim.SAM`'s:
        alpha: weight of the surrogate-gap ascent (paper: 0.005–1.0; 0 gives SAM).
        rho_schedule: a :class:`~samlab.optim.rho_schedule.RhoSchedule`; constant ``rho`` when
            None.
    """

    method = "GSAM"
    alpha_key = "gsam_alpha"

    @sam_keywords()
    def __init__(
        self,
        params,
        base_optimizer=torch.optim.SGD,
        *,
        alpha: float = 0.4,
        rho_schedule: RhoSchedule | None = None,
        **options,
    ):
        if rho_schedule is not None and not isinstance(rho_schedule, RhoSchedule):
            raise TypeError(
                "rho_schedule must be a samlab.optim RhoSchedule (ProportionalRho, LinearRho, "
                f"CosineRho, PolynomialRho), got {type(rho_schedule).__name__}"
            )
        self.rho_schedule = rho_schedule
        super().__init__(params, base_optimizer, alpha, **options)

    def _rho(self, group: dict[str, Any]) -> float:
        if self.rho_schedule is None:
            return group["rho"]
        lr, initial = group["lr"], group.get("initial_lr")
        return self.rho_schedule(float(lr), None if initial is None else float(initial))

    def _update(self) -> None:
        self._sgd_first_step = False
        if self._update_fused():
            return
        if self._sgd_first_step and self.max_grad_norm is None:
            # SGD's first step creates its momentum buffers eagerly; the fused call takes
            # over from the next step, so this one step's decomposition runs the loop rather
            # than compiling a second graph used once
            self._finish(impl="loop")
            self.base_step.step()
            return
        super()._update()

    def _update_fused(self) -> bool:
        """The compiled path with SGD: decomposition and base step in one call
        (:func:`kernels.compiled.gsam_sgd_step_`). False where it does not apply (then
        ``_finish`` and the base step run apart): another impl or base, clipping, groups with
        different ``gsam_alpha``, parameters with a gradient in one pass only."""
        clean = self._clean_grads
        if self.max_grad_norm is not None or not clean:
            return False
        alphas = {
            group["gsam_alpha"]
            for group in self.param_groups
            if any(p.grad is not None for p in group["params"])
        }
        if len(alphas) != 1 or 0 in alphas:
            return False
        plan = self.base_step.sgd_plan()
        if plan is None:
            self._sgd_first_step = self.base_step.creating_buffers
            return False
        params, grads, bufs, lrs, spec = plan
        if len(params) != len(clean) or any(p not in clean for p in params):
            return False
        g = [clean[p] for p in params]
        if self.dispatch.compiled_layout(params + g) is None:
            return False
        eps = float(self.param_groups[0]["perturb_eps"])
        alpha = float(alphas.pop())
        cos = self.dispatch.run("gsam_sgd_step_", params, grads, g, bufs, lrs, spec, alpha, eps)
        if cos is kernels.NOT_RUN:
            return False
        self._clean_grads = {}
        self.last_step["gsam_cos"] = cos
        self.base_step.mark_stepped()
        return True

    def _finish(self, impl: str | kernels.Dispatch | None = None) -> None:
        clean = self._clean_grads
        self._clean_grads = {}
        grouped = [
            (group, [p for p in group["params"] if p.grad is not None and p in clean])
            for group in self.param_groups
        ]
        params = [p for _, ps in grouped for p in ps]
        if not params:
            return
        impl = impl or self.dispatch
        eps = self.param_groups[0]["perturb_eps"]
        alphas = {group["gsam_alpha"] for group, ps in grouped if ps}
        if len(alphas) == 1:  # one alpha for all (the usual case): one fused call
            alpha = alphas.pop()
            if alpha != 0:
                self.last_step["gsam_cos"] = kernels.gsam_decompose_(
                    [p.grad for p in params], [clean[p] for p in params], alpha, eps, impl=impl
                )
            return
        g = [clean[p] for p in params]
        g_p = [p.grad for p in params]
        norm_g, norm_gp, inner = kernels.pair_stats(g, g_p, impl=impl)
        cos = inner / (norm_g * norm_gp + eps)
        coef = cos * norm_g / (norm_gp + eps)  # g_perp = g - coef * g_p
        self.last_step["gsam_cos"] = cos
        for group, ps in grouped:
            alpha = group["gsam_alpha"]
            if alpha == 0 or not ps:
                continue
            # final = g_p - alpha * (g - coef * g_p)
            kernels.gsam_combine_(
                [p.grad for p in ps], [clean[p] for p in ps], coef, alpha, impl=impl
            )

    def _end_step(self) -> None:
        super()._end_step()
        if self.rho_schedule is not None and not self._skip:
            self.rho_schedule.step()

    def _extra_state(self) -> dict[str, Any]:
        if self.rho_schedule is None:
            return {}
        return {"rho_schedule": self.rho_schedule.state_dict()}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        saved = state.get("rho_schedule")
        if (saved is None) != (self.rho_schedule is None):
            raise ValueError(
                "GSAM.load_state_dict: the saved optimizer "
                + ("had a rho_schedule and this one has none" if saved else "had no rho_schedule")
                + "; build GSAM with the same rho_schedule type to resume"
            )
        if saved is not None:
            self.rho_schedule.load_state_dict(saved)
