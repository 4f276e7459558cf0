"""The passes of a :class:`~samlab.optim.SAMBase` step: the closure and the manual API.

``step(closure)`` runs ``begin_step()``, the clean pass (unless the caller's fresh gradients
stand in for it), ``first_step()``, the perturbed pass where one is needed, and
``second_step()``; loops that cannot pass a closure call these three themselves (see
``docs/closure-protocol.md``). Gradients are marked with their version counters at the end of a
step, so gradients left over from it are recognised as stale. With a ``GradScaler`` each pass's
gradients are unscaled once through a stand-in optimizer of their own (:class:`_ScalerView`),
and an inf/NaN in either pass skips the step. :class:`_Passes` holds these methods of
:class:`~samlab.optim.SAMBase`; :func:`current_pass` (re-exported by
:mod:`samlab.optim._base` and :mod:`samlab.optim`) reads the pass of the innermost running
``step(closure)``.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

_CURRENT_PASS: contextvars.ContextVar[tuple[str | None, bool]] = contextvars.ContextVar(
    "samlab_current_pass", default=(None, False)
)
_STALE_MARK = "_samlab_stale_version"


def current_pass() -> str | None:
    """The pass that the innermost running ``step(closure)`` is in: "clean", "perturbed" or None.

    Lets a closure that has no reference to the optimizer apply a BatchNorm policy.
    """
    return _CURRENT_PASS.get()[0]


class _ScalerView:
    """A stand-in optimizer for ``GradScaler.unscale_``: one per pass, so that each pass's
    gradients are unscaled once and each pass's inf check is seen by ``scaler.update()``."""

    def __init__(self, param_groups: list[dict[str, Any]]) -> None:
        self.param_groups = param_groups


class _Passes:
    """The step protocol of :class:`~samlab.optim.SAMBase` (a base class of it): ``step``,
    ``begin_step``, ``first_step``, ``second_step``, the stale-gradient marks, the per-pass
    ``GradScaler`` unscaling and the records of ``last_step``."""

    # ----------------------------------------------------------------- gradients
    def _grads_are_fresh(self) -> bool:
        """True when some gradient was computed after the previous step ended.

        Gradients that changed only by being zeroed in place (``zero_grad(set_to_none=False)``)
        are not fresh: all-zero gradients mean no clean pass ran, so samlab runs it.
        """
        grads = [p.grad for p in self._all_params_with_grad()]
        if not any(getattr(g, _STALE_MARK, None) != g._version for g in grads):
            return False
        return any(bool(g.any()) for g in grads)  # stops at the first non-zero tensor

    def _mark_grads_stale(self) -> None:
        for p in self._all_params_with_grad():
            grad = p.grad
            setattr(grad, _STALE_MARK, grad._version)

    # ----------------------------------------------------------------- AMP
    def _unscale(self, scaler, pass_index: int) -> bool:
        """Unscale this pass's gradients with ``scaler``; True when they hold inf/NaN."""
        if scaler is None or not scaler.is_enabled():
            return False
        if self._scaler_views is None:
            self._scaler_views = (_ScalerView(self.param_groups), _ScalerView(self.param_groups))
        view = self._scaler_views[pass_index]
        view.param_groups = self.param_groups
        scaler.unscale_(view)
        try:
            found = scaler._per_optimizer_states[id(view)]["found_inf_per_device"]
        except (AttributeError, KeyError) as err:  # pragma: no cover - torch internals moved
            raise RuntimeError(
                "samlab could not read GradScaler's inf check; this torch version changed "
                "GradScaler internals: use bf16 autocast or report the torch version"
            ) from err
        return bool(sum(v.item() for v in found.values()))

    # ----------------------------------------------------------------- manual API
    @torch.no_grad()
    def begin_step(self) -> None:
        """Call before the first forward of a step (one-step SAM perturbs here)."""
        self._skip = False
        self.last_step = {"passes": 0, "skipped": False}
        self._begin()

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False, *, scaler=None) -> bool:
        """After pass 1's backward: perturb if the method needs a second pass.

        Returns True when the caller must now run a second forward+backward (at ``w + e``),
        False when the step has a single pass. Call ``second_step()`` in both cases.
        """
        if self.current_pass is None:  # manual users may skip begin_step() for two-pass methods
            if self.perturbs_before_first_pass:
                raise RuntimeError(
                    f"{self.method}: call begin_step() before the forward pass; it applies the "
                    "perturbation that this step's only pass must see (without it the step "
                    "would silently be the base optimizer's)"
                )
            self.begin_step()
        self.last_step["passes"] = self.last_step.get("passes", 0) + 1
        if self._unscale(scaler, 0):
            self._skip = True
            self.single_pass = True
            return False
        needs_second = False if self.single_pass else bool(self._first())
        if needs_second and zero_grad:
            self.zero_grad(set_to_none=True)
        return needs_second

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False, *, scaler=None) -> None:
        """Restore ``w``, form the final gradient and step the base optimizer."""
        if self.current_pass is None:
            raise RuntimeError(
                f"{self.method}.second_step() called without first_step(); call "
                "begin_step(), backward, first_step(), [backward], second_step() in that order"
            )
        two_pass = self.current_pass == "perturbed" and not self.single_pass
        if two_pass:
            self.last_step["passes"] = self.last_step.get("passes", 0) + 1
            if self._unscale(scaler, 1):
                self._skip = True
        elif self.single_pass and self.last_step.get("passes", 0) == 0:
            # one-pass methods via the manual API: first_step() may have been skipped
            self.last_step["passes"] = 1
            if self._unscale(scaler, 0):
                self._skip = True
        self._restore()
        if not self._skip:
            self._update()
        self._end_step()
        self._opt_called = True  # lets LR schedulers know the optimizer stepped
        if not self._in_step:
            for hook in list(self._optimizer_step_post_hooks.values()):
                hook(self, (), {})
        if zero_grad:
            self.zero_grad(set_to_none=True)

    def _end_step(self) -> None:
        self.last_step["skipped"] = self._skip
        clean, pert = self.last_step.get("clean_loss"), self.last_step.get("perturbed_loss")
        if clean is not None and pert is not None:
            self.last_step["sharpness_gap"] = pert - clean
        self._mark_grads_stale()
        self.current_pass = None
        self.single_pass = False
        if not self._skip:  # a skipped (AMP overflow) step is not a step: LookSAM retries it
            self._step_index += 1

    # ----------------------------------------------------------------- closure API
    def step(self, closure: Callable[[], Any] | None = None, *, scaler=None) -> Any:
        """One full step with ``closure`` (zero-grads, forward, backward, returns the loss).

        Returns the loss of the clean pass that this call ran, the perturbed-point loss for
        one-step SAM, or None when the clean gradients were computed by the caller before
        ``step`` (they are then reused, not recomputed).
        """
        if closure is None:
            raise TypeError(
                f"{self.method}.step() needs a closure that zero-grads, runs forward and "
                "backward and returns the loss; without one use the manual API: "
                "begin_step(), backward, first_step(), [backward], second_step()"
            )
        token = None
        self._in_step = True
        try:
            self.begin_step()
            token = _CURRENT_PASS.set((self.current_pass, self.single_pass))
            loss = None
            if self.current_pass == "perturbed" or not self._grads_are_fresh():
                with torch.enable_grad():
                    loss = closure()
                self._record_loss(loss)
            if self.first_step(scaler=scaler):
                _CURRENT_PASS.set((self.current_pass, self.single_pass))
                with torch.enable_grad():
                    perturbed = closure()
                self._record_loss(perturbed)
            self.second_step(scaler=scaler)
            return loss
        finally:
            self._in_step = False
            if token is not None:
                _CURRENT_PASS.reset(token)
            if self.current_pass is not None:  # an exception inside a pass: restore w
                with torch.no_grad():
                    self._restore()
                self.current_pass = None
                self.single_pass = False

    def _record_loss(self, loss: Any) -> None:
        if loss is None:
            return
        value = loss.detach() if isinstance(loss, Tensor) else loss
        key = "perturbed_loss" if self.current_pass == "perturbed" else "clean_loss"
        self.last_step[key] = value
