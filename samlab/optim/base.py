""":class:`SAMBase`: the base optimizer, the passes of a step, AMP, state, observability.

The protocol is documented in ``docs/closure-protocol.md``. A subclass implements hooks:

* ``_begin()`` — before pass 1 (one-step SAM perturbs here); returns nothing.
* ``_first() -> bool`` — after pass 1; perturbs (:meth:`SAMBase._ascend`) and returns True
  when a second pass is needed.
* ``_finish()`` — after the last pass and after the weights are restored; turns ``p.grad``
  into the gradient the base optimizer should follow.
* ``_update()`` (optional) — ``_finish``, clipping and the base step; GSAM and one-step SAM
  override it to fuse the three into one compiled call.

:class:`SAMBase` is composed of objects with their own state: a :class:`kernels.Dispatch`
(the implementation per device and the one fallback when compilation fails), a
:class:`~samlab.optim.perturbation.Perturbation` (``w -> w + e`` and back, on the ascent
functional :func:`kernels.sam_ascent_`), a :class:`~samlab.optim.base_step.BaseStep` (the base
optimizer's step, one compiled call for SGD) and a
:class:`~samlab.optim.passes.PassUnscaler` (a ``GradScaler`` per pass).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from kernels import Dispatch, Segment
from samlab.optim.base_step import BaseStep
from samlab.optim.checks import check_group, check_options, check_state_dict
from samlab.optim.passes import (
    PassUnscaler,
    current_pass,
    grads_are_fresh,
    mark_grads_stale,
    reset_current_pass,
    set_current_pass,
)
from samlab.optim.perturbation import Perturbation

__all__ = ["SAMBase", "current_pass"]


class SAMBase(torch.optim.Optimizer):
    """Base class: wraps ``base_optimizer`` built on this optimizer's own ``param_groups``."""

    #: name used in error messages and state_dict checks
    method = "SAMBase"
    #: True when begin_step() moves the weights before the first forward (one-step SAM's
    #: ascent, bSAM's posterior sample): the closure always runs, the caller's gradients are
    #: never reused
    perturbs_before_first_pass = False

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        base_optimizer: type[torch.optim.Optimizer],
        defaults: dict[str, Any],
        base_kwargs: dict[str, Any],
        *,
        max_grad_norm: float | None = None,
        impl: str = "auto",
    ) -> None:
        check_options(self.method, base_optimizer, defaults, max_grad_norm)
        self.max_grad_norm = max_grad_norm
        self.dispatch = Dispatch(impl, owner=self.method, numel=self._numel)
        super().__init__(params, defaults)
        try:
            self.base_optimizer = base_optimizer(self.param_groups, **base_kwargs)
        except TypeError as err:
            raise ValueError(
                f"{self.method}: {base_optimizer.__name__} rejected the options "
                f"{sorted(base_kwargs)}: {err}"
            ) from err
        # One list of group dicts, shared: LR schedulers and per-group options reach both.
        self.param_groups = self.base_optimizer.param_groups
        for key, value in self.base_optimizer.defaults.items():
            self.defaults.setdefault(key, value)
        self.current_pass: str | None = None
        self.single_pass = False
        self.last_step: dict[str, Any] = {}
        self.track_stats = False
        self.perturbation = Perturbation(self.dispatch)
        self.base_step = BaseStep(self.base_optimizer, self.dispatch)
        self._step_index = 0
        self._skip = False
        self._in_step = False
        self._unscaler = PassUnscaler()

    @property
    def impl(self) -> str:
        """The implementation asked for: "auto", "loop", "foreach" or "compiled" ("loop" after
        a failed compilation); ``dispatch.impl_for(device)`` tells what runs where."""
        return self.dispatch.impl

    @impl.setter
    def impl(self, value: str) -> None:
        self.dispatch.impl = value

    # ----------------------------------------------------------------- param groups
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        check_group(param_group)
        super().add_param_group(param_group)
        self.dispatch.forget()
        base = getattr(self, "base_optimizer", None)
        if base is not None:
            group = self.param_groups.pop()
            base.add_param_group(group)

    def _numel(self) -> int:
        return sum(p.numel() for g in self.param_groups for p in g["params"])

    # ----------------------------------------------------------------- helpers
    def _grouped(self) -> list[tuple[dict[str, Any], list[Tensor], list[Tensor]]]:
        """(group, params with a gradient, their gradients) for every group."""
        out = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            out.append((group, params, [p.grad for p in params]))
        return out

    def _all_params_with_grad(self) -> list[Tensor]:
        return [p for g in self.param_groups for p in g["params"] if p.grad is not None]

    def _ascend(
        self,
        grouped,
        directions,
        rho_of: Callable[[dict[str, Any]], float],
        *,
        normalize: bool = True,
    ) -> Tensor:
        """Perturb every group along ``directions`` (a list per group) with the global norm of
        the directions over all groups (ASAM's ``||T d||`` on adaptive groups); returns that
        norm and records ``||e||`` when ``track_stats``. ``normalize=False``: ``e = rho * d``
        (bSAM; the returned norm is 0)."""
        segments = [
            Segment(
                params,
                dirs,
                rho_of(group),
                group["perturb_eps"],
                group["eta"] if group.get("adaptive", False) else None,
                *self._segment_masks(group, params),
                normalize,
            )
            for (group, params, _), dirs in zip(grouped, directions)
            if params
        ]
        if segments:
            norm, size = self.perturbation.ascend(segments, measure=self.track_stats)
        else:
            norm = torch.zeros((), device=self.param_groups[0]["params"][0].device)
            size = torch.zeros(())
        self.current_pass = "perturbed"
        if self.track_stats:
            self.last_step["perturbation_norm"] = size
        return norm

    # ----------------------------------------------------------------- subclass hooks
    def _segment_masks(
        self, group: dict[str, Any], params: list[Tensor]
    ) -> tuple[list[Tensor | None] | None, bool]:
        """Sparse SAM's ``(masks, mask_norm)`` of a segment (:class:`kernels.Segment`); dense
        here."""
        return None, False

    def _begin(self) -> None:
        self.current_pass = "clean"
        self.single_pass = False

    def _first(self) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def _finish(self) -> None:
        """Default: p.grad already holds the gradient to follow (g at w + e)."""

    def _update(self) -> None:
        """After the weights are restored: the final gradient (``_finish``), clipping, the
        base step. Subclasses may fuse the three on the compiled path."""
        self._finish()
        if self.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self._all_params_with_grad(), self.max_grad_norm)
        self.base_step.step()

    # ----------------------------------------------------------------- the manual API
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
        if self._unscaler.unscale(scaler, 0, self.param_groups):
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
            if self._unscaler.unscale(scaler, 1, self.param_groups):
                self._skip = True
        elif self.single_pass and self.last_step.get("passes", 0) == 0:
            # one-pass methods via the manual API: first_step() may have been skipped
            self.last_step["passes"] = 1
            if self._unscaler.unscale(scaler, 0, self.param_groups):
                self._skip = True
        self.perturbation.restore()
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
        mark_grads_stale([p.grad for p in self._all_params_with_grad()])
        self.current_pass = None
        self.single_pass = False
        if not self._skip:  # a skipped (AMP overflow) step is not a step: LookSAM retries it
            self._step_index += 1

    def _grads_are_fresh(self) -> bool:
        return grads_are_fresh([p.grad for p in self._all_params_with_grad()])

    def record_step(self, last_step: dict[str, Any]) -> None:
        """Book a step that ran outside :meth:`step` (``samlab.train.FusedStep`` traces the
        whole step): ``last_step`` becomes the step's record and the step count advances."""
        self.last_step = last_step
        self._step_index += 1

    # ----------------------------------------------------------------- the closure API
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
            token = set_current_pass(self.current_pass, self.single_pass)
            loss = None
            may_reuse = not self.perturbs_before_first_pass and self.current_pass != "perturbed"
            if not (may_reuse and self._grads_are_fresh()):
                with torch.enable_grad():
                    loss = closure()
                self._record_loss(loss)
            if self.first_step(scaler=scaler):
                set_current_pass(self.current_pass, self.single_pass)
                with torch.enable_grad():
                    perturbed = closure()
                self._record_loss(perturbed)
            self.second_step(scaler=scaler)
            return loss
        finally:
            self._in_step = False
            if token is not None:
                reset_current_pass(token)
            if self.current_pass is not None:  # an exception inside a pass: restore w
                with torch.no_grad():
                    self.perturbation.restore()
                self.current_pass = None
                self.single_pass = False

    def _record_loss(self, loss: Any) -> None:
        if loss is None:
            return
        value = loss.detach() if isinstance(loss, Tensor) else loss
        key = "perturbed_loss" if self.current_pass == "perturbed" else "clean_loss"
        self.last_step[key] = value

    # ----------------------------------------------------------------- state
    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["base_optimizer"] = self.base_optimizer.state_dict()
        sd["samlab"] = {
            "method": self.method,
            "base": type(self.base_optimizer).__name__,
            "step": self._step_index,
            **self._extra_state(),
        }
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        check_state_dict(
            state_dict,
            method=self.method,
            base=type(self.base_optimizer).__name__,
            param_groups=self.param_groups,
        )
        self._load_extra_state(state_dict["samlab"])  # validates method knobs before any change
        plain = {k: v for k, v in state_dict.items() if k not in ("base_optimizer", "samlab")}
        super().load_state_dict(plain)
        self.base_optimizer.load_state_dict(state_dict["base_optimizer"])
        self.base_optimizer.param_groups = self.param_groups
        self._step_index = int(state_dict["samlab"]["step"])
        self.perturbation.clear()

    def __repr__(self) -> str:
        return f"{self.method}(base_optimizer={self.base_optimizer!r})"
