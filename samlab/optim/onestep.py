"""One-step SAM (SAM.v2 / S²-SAM, Ji et al., NeurIPS 2024): one forward+backward per step.

The ascent direction is the gradient kept from the previous step:

    e_t     = rho * g_{t-1} / (||g_{t-1}|| + eps)       (e_0 = 0: no gradient kept yet)
    g_t     = grad L(w_t + e_t)                          (the step's only pass)
    w_{t+1} = base_step(w_t, g_t)                        (weights restored to w_t first)

and ``g_t`` is kept for step ``t + 1``. Adaptive variant: ``T = |w_t| + eta``,
``e_t = rho * T^2 g_{t-1} / (||T g_{t-1}|| + eps)``.

.. note::
   The seed code (jjsrf/SSAM-NEURIPS2024) reads the kept gradient from ``.grad`` and skips
   parameters whose ``.grad`` is None; since PyTorch 2.0 ``zero_grad()`` sets it to None, so
   that code silently runs plain SGD. samlab keeps ``g_{t-1}`` in its own state (saved in
   ``state_dict``). Its adaptive variant also squared the gradient instead of the weights;
   samlab uses ASAM's ``T = |w| + eta``. The loss returned by ``step`` is the loss at
   ``w_t + e_t`` (there is no clean pass); every forward of a step, including BatchNorm
   statistics, sees the perturbed weights. Pre-computed gradients at ``w_t`` are not used:
   the closure is always evaluated at ``w_t + e_t``.
"""

from __future__ import annotations

import kernels
from samlab.optim.sam import SAM

__all__ = ["OneStepSAM"]


class OneStepSAM(SAM):
    """One-step SAM: SAM's perturbation from the previous step's gradient, one pass per step."""

    method = "OneStepSAM"
    perturbs_before_first_pass = True

    def _begin(self) -> None:
        self.single_pass = True
        grouped = []
        directions = []
        for group in self.param_groups:
            params = [p for p in group["params"] if "kept_grad" in self.state[p]]
            grouped.append((group, params, None))
            directions.append([self.state[p]["kept_grad"] for p in params])
        if any(params for _, params, _ in grouped):
            self.last_step["rho"] = [group["rho"] for group in self.param_groups]
            self.last_step["grad_norm"] = self._ascend(grouped, directions, self._rho)
        self.current_pass = "perturbed"

    def _update(self) -> None:
        """On the compiled path with SGD, keeping ``g_t`` and the base step are one call
        (:func:`kernels.compiled.sgd_step_` with ``keep``); otherwise ``_finish`` copies."""
        if self.max_grad_norm is None and self._update_fused():
            return
        super()._update()

    def _update_fused(self) -> bool:
        plan = self.base_step.sgd_plan()
        if plan is None:
            return False
        keep = []
        for p, grad in zip(plan.params, plan.grads):
            kept = self.state[p].get("kept_grad")
            if kept is None or kept.shape != grad.shape or kept.dtype != grad.dtype:
                return False
            keep.append(kept)
        if self.dispatch.compiled_layout(plan.params + keep) is None:
            return False
        if self.dispatch.run("sgd_step_", *plan, keep) is kernels.NOT_RUN:
            return False
        self.base_step.mark_stepped()
        return True

    def _finish(self) -> None:
        for p in self._all_params_with_grad():
            state = self.state[p]
            kept = state.get("kept_grad")
            if kept is not None and kept.shape == p.grad.shape:
                kept.copy_(p.grad)
            else:
                state["kept_grad"] = p.grad.detach().clone()
