"""What the passes of a SAM-family step share beyond the optimizer: the pass in progress, the
freshness of gradients, and per-pass ``GradScaler`` unscaling.

* :func:`current_pass` reads the pass of the innermost running ``step(closure)`` (a context
  variable that :meth:`~samlab.optim.SAMBase.step` sets with :func:`set_current_pass`), so a
  closure without a reference to the optimizer can apply a BatchNorm policy.
* Gradients are marked with their version counters at the end of a step
  (:func:`mark_grads_stale`); :func:`grads_are_fresh` tells whether some gradient was computed
  since, i.e. whether the caller's gradients can stand in for the clean pass.
* :class:`PassUnscaler` unscales each pass's gradients once, through a stand-in optimizer per
  pass, so that ``scaler.update()`` sees each pass's inf/NaN check.
"""

from __future__ import annotations

import contextvars
from collections.abc import Sequence
from typing import Any

from torch import Tensor

__all__ = [
    "PassUnscaler",
    "current_pass",
    "grads_are_fresh",
    "mark_grads_stale",
    "reset_current_pass",
    "set_current_pass",
]

_CURRENT_PASS: contextvars.ContextVar[tuple[str | None, bool]] = contextvars.ContextVar(
    "samlab_current_pass", default=(None, False)
)
#: the attribute of a gradient tensor holding its version counter when the last step ended
_STALE_MARK = "_samlab_stale_version"


def current_pass() -> str | None:
    """The pass that the innermost running ``step(closure)`` is in: "clean", "perturbed" or None.

    Lets a closure that has no reference to the optimizer apply a BatchNorm policy.
    """
    return _CURRENT_PASS.get()[0]


def set_current_pass(name: str | None, single_pass: bool) -> contextvars.Token:
    """Enter pass ``name`` (what :func:`current_pass` returns); the token undoes it."""
    return _CURRENT_PASS.set((name, single_pass))


def reset_current_pass(token: contextvars.Token) -> None:
    """Back to the pass before the :func:`set_current_pass` that returned ``token``."""
    _CURRENT_PASS.reset(token)


def grads_are_fresh(grads: Sequence[Tensor]) -> bool:
    """True when some gradient was computed after the previous step ended.

    Gradients that changed only by being zeroed in place (``zero_grad(set_to_none=False)``)
    are not fresh: all-zero gradients mean no clean pass ran.
    """
    if not any(getattr(g, _STALE_MARK, None) != g._version for g in grads):
        return False
    return any(bool(g.any()) for g in grads)  # stops at the first non-zero tensor


def mark_grads_stale(grads: Sequence[Tensor]) -> None:
    """Remember each gradient's version counter: unchanged, it is left over from this step."""
    for grad in grads:
        setattr(grad, _STALE_MARK, grad._version)


class _ScalerView:
    """A stand-in optimizer for ``GradScaler.unscale_``: one per pass, so that each pass's
    gradients are unscaled once and each pass's inf check is seen by ``scaler.update()``."""

    def __init__(self, param_groups: list[dict[str, Any]]) -> None:
        self.param_groups = param_groups


class PassUnscaler:
    """Unscales the gradients of pass 0 (clean) or 1 (perturbed) with a ``GradScaler``."""

    def __init__(self) -> None:
        self._views: tuple[_ScalerView, _ScalerView] | None = None

    def unscale(self, scaler, pass_index: int, param_groups: list[dict[str, Any]]) -> bool:
        """Unscale this pass's gradients with ``scaler``; True when they hold inf/NaN."""
        if scaler is None or not scaler.is_enabled():
            return False
        if self._views is None:
            self._views = (_ScalerView(param_groups), _ScalerView(param_groups))
        view = self._views[pass_index]
        view.param_groups = param_groups
        scaler.unscale_(view)
        try:
            found = scaler._per_optimizer_states[id(view)]["found_inf_per_device"]
        except (AttributeError, KeyError) as err:  # pragma: no cover - torch internals moved
            raise RuntimeError(
                "samlab could not read GradScaler's inf check; this torch version changed "
                "GradScaler internals: use bf16 autocast or report the torch version"
            ) from err
        return bool(sum(v.item() for v in found.values()))
