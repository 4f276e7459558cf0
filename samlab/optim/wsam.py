"""WSAM: weighted sharpness as a regularization term (Yue et al., KDD 2023).

The loss is ``L(w) + gamma / (1 - gamma) * (max_{||e|| <= rho} L(w + e) - L(w))``, so the sharpness
is weighted by ``alpha = gamma / (1 - gamma)``. Per step, with ``g = grad L(w)``,
``e = rho g / (||g|| + eps)`` (ASAM's ``e`` with ``adaptive=True``) and ``g_p = grad L(w + e)``:

* decoupled (``decouple=True``, the paper's recommended "weight decouple" update): the base
  optimizer steps with ``g`` (its momentum and moments see clean gradients only), then
  ``w <- w - lr * alpha * (g_p - g)``: the sharpness term of the current step only;
* coupled (``decouple=False``): the base optimizer steps with ``g + alpha (g_p - g)``.

``gamma = 0`` is the base optimizer exactly (one pass); ``gamma = 1/2`` (``alpha = 1``) with
``decouple=False`` is SAM exactly, with any base optimizer (with ``decouple=True`` only over
plain SGD: a base with momentum accumulates ``g`` instead of ``g_p``).

.. note::
   With ``max_grad_norm`` the decoupled form clips ``g`` (what the base optimizer follows); the
   sharpness term is not clipped. pytorch-optimizer's WSAM also scales its perturbation by
   ``w^2`` when ``adaptive`` (ASAM with ``eta = 0``); samlab's ``adaptive`` is ASAM's
   ``T = |w| + eta``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

import kernels
from samlab.optim.sam import GradientPairSAM, sam_keywords

__all__ = ["WSAM"]


def check_gamma(gamma: Any, where: str = "gamma") -> None:
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0 <= gamma < 1:
        raise ValueError(
            f"{where} must be in [0, 1) (the sharpness weight is gamma / (1 - gamma): 0 is "
            f"the base optimizer, 0.5 is SAM), got {gamma!r}"
        )


def weight(group: dict[str, Any]) -> float:
    """``alpha = gamma / (1 - gamma)`` of a param group."""
    gamma = group["wsam_gamma"]
    return gamma / (1 - gamma)


class WSAM(GradientPairSAM):
    """WSAM wrapping any ``torch.optim`` optimizer (see the module docstring for the rule).

    Args beyond :class:`~samlab.optim.SAM`'s:
        gamma: the sharpness weight in [0, 1), used as ``gamma / (1 - gamma)`` (paper: stable
            for 0.8-0.95; 0 is the base optimizer, 0.5 SAM). Kept per param group as
            ``"wsam_gamma"``.
        decouple: the paper's decoupled update (True) or the weighted gradient fed to the base
            optimizer (False).
    """

    method = "WSAM"
    alpha_key = "wsam_gamma"

    @sam_keywords()
    def __init__(
        self,
        params,
        base_optimizer=torch.optim.SGD,
        *,
        gamma: float = 0.9,
        decouple: bool = True,
        **options,
    ):
        check_gamma(gamma)
        self.decouple = bool(decouple)
        self._sharpness: list[tuple[dict[str, Any], list[Tensor], list[Tensor]]] = []
        super().__init__(params, base_optimizer, gamma, **options)

    def _begin(self) -> None:
        super()._begin()
        # gamma = 0 everywhere: the base optimizer, one pass
        self.single_pass = self.single_pass or all(
            group["wsam_gamma"] == 0 for group in self.param_groups
        )

    # ----------------------------------------------------------------- the update
    def _update(self) -> None:
        self._sgd_first_step = False
        if self._clean_grads and self.max_grad_norm is None and self._update_fused():
            return
        impl = "loop" if self._sgd_first_step else None  # see GSAM: no graph used once
        self._finish(impl=impl)
        if self.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self._all_params_with_grad(), self.max_grad_norm)
        self.base_step.step()
        self._add_sharpness()

    def _update_fused(self) -> bool:
        """The compiled path with SGD: weighting and base step in one call
        (:func:`kernels.compiled.wsam_sgd_step_`); False where it does not apply."""
        weights = {
            weight(group)
            for group in self.param_groups
            if any(p.grad is not None for p in group["params"])
        }
        if len(weights) != 1:
            return False
        plan = self.base_step.sgd_plan()
        if plan is None:
            self._sgd_first_step = self.base_step.creating_buffers
            return False
        clean = self._clean_grads
        params, grads, bufs, lrs, spec = plan
        if len(params) != len(clean) or any(p not in clean for p in params):
            return False
        g = [clean[p] for p in params]
        if self.dispatch.compiled_layout(params + g) is None:
            return False
        alpha = weights.pop()
        args = (params, grads, g, bufs, lrs, spec, alpha, self.decouple)
        if self.dispatch.run("wsam_sgd_step_", *args) is kernels.NOT_RUN:
            return False
        self._clean_grads = {}
        if self.decouple or alpha != 1:
            for p, gi in zip(params, g):
                p.grad = gi  # the gradient SGD followed, as on the eager path
        self.base_step.mark_stepped()
        return True

    def _finish(self, impl: str | kernels.Dispatch | None = None) -> None:
        """``p.grad`` becomes what the base optimizer follows: ``g`` (decoupled; ``g_p - g``
        is kept for :meth:`_add_sharpness`) or ``g + alpha (g_p - g)`` (coupled)."""
        impl = impl or self.dispatch
        clean = self._clean_grads
        self._clean_grads = {}
        self._sharpness = []
        for group in self.param_groups:
            alpha = weight(group)
            ps = [p for p in group["params"] if p in clean]
            for p in ps:
                if p.grad is None:  # a gradient in the clean pass only: follow it
                    p.grad = clean.pop(p)
            ps = [p for p in ps if p in clean]
            if not ps:
                continue
            g_p, g = [p.grad for p in ps], [clean[p] for p in ps]
            if self.decouple:
                if alpha != 0:
                    minus_one = torch.full((), -1.0, dtype=g[0].dtype, device=g[0].device)
                    kernels.axpy_(g_p, g_p, g, minus_one, impl=impl)  # g_p <- g_p - g
                    self._sharpness.append((group, ps, g_p))
            elif alpha == 1:  # SAM exactly: follow g_p
                continue
            elif alpha != 0:
                kernels.lerp_(g, g_p, alpha, impl=impl)  # g <- g + alpha (g_p - g)
            for p, gi in zip(ps, g):
                p.grad = gi

    def _add_sharpness(self) -> None:
        """Decoupled: ``w <- w - lr * alpha * (g_p - g)`` after the base step."""
        pending, self._sharpness = self._sharpness, []
        for group, ps, sharpness in pending:
            ref = ps[0]
            scale = torch.full(
                (), -float(group["lr"]) * weight(group), dtype=ref.dtype, device=ref.device
            )
            kernels.scaled_add_(ps, sharpness, scale, impl=self.dispatch)

    # ----------------------------------------------------------------- state
    def _extra_state(self) -> dict[str, Any]:
        return {"decouple": self.decouple}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        saved = bool(state.get("decouple", self.decouple))
        if saved != self.decouple:
            raise ValueError(
                f"WSAM.load_state_dict: the state_dict was saved with decouple={saved}, this "
                f"optimizer has decouple={self.decouple}; build WSAM(..., decouple={saved}) to "
                "resume"
            )
