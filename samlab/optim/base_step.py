"""The base optimizer's step inside a SAM-family step, compiled for ``torch.optim.SGD``.

After the passes, once the weights are restored and the final gradient is formed and clipped,
the base optimizer steps. Where the optimizer's dispatch runs ``"compiled"`` and the base is
exactly ``torch.optim.SGD``, the SGD update of all groups runs as one compiled call
(:func:`kernels.compiled.sgd_step_`, bit-exact with ``torch.optim.SGD.step``; each group's lr a
0-d float64 tensor refilled every step, so an LR scheduler never recompiles); SGD's first step
(which creates the momentum buffers), other base optimizers and the cases listed in
:meth:`BaseStep.sgd_plan` run ``base_optimizer.step()``. GSAM and one-step SAM use the plan for
their fused updates.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor
from torch.optim import optimizer as torch_optimizer

from kernels import NOT_RUN, Dispatch

__all__ = ["BaseStep", "SGDPlan"]


class SGDPlan(NamedTuple):
    """The arguments of :func:`kernels.compiled.sgd_step_` for one step, in its order."""

    params: list[Tensor]
    grads: list[Tensor]
    bufs: list[Tensor | None]
    lrs: list[Tensor]
    spec: tuple[tuple[int, float, float, float, bool, bool], ...]


class BaseStep:
    """The base optimizer's step: one compiled call for SGD, else ``base_optimizer.step()``.

    Args:
        base_optimizer: the wrapped optimizer (its ``param_groups`` are the wrapper's).
        dispatch: the wrapper's :class:`kernels.Dispatch`.
    """

    def __init__(self, base_optimizer: torch.optim.Optimizer, dispatch: Dispatch) -> None:
        self.base_optimizer = base_optimizer
        self.dispatch = dispatch
        #: True when the last :meth:`sgd_plan` found SGD's momentum buffers not created yet
        self.creating_buffers = False
        self._lr_tensors: dict[int, Tensor] = {}  # per group: its lr as a 0-d float64 tensor

    def step(self) -> None:
        """The base optimizer's step; SGD's update as one compiled call where it applies."""
        plan = self.sgd_plan()
        if plan is not None and self.dispatch.run("sgd_step_", *plan) is not NOT_RUN:
            self.mark_stepped()
            return
        self.base_optimizer.step()

    def mark_stepped(self) -> None:
        """What ``base_optimizer.step()`` records besides the update (LR schedulers built on
        the base optimizer check it)."""
        self.base_optimizer._opt_called = True

    def sgd_plan(self) -> SGDPlan | None:
        """The compiled SGD step's arguments, or None where it does not apply: the compiled
        path is not in use, the base is not exactly ``torch.optim.SGD``, a hook is registered
        on it, an option has no compiled twin (differentiable, fused, tensor weight decay),
        tensors differ in device or dtype, or a momentum buffer does not exist yet (SGD's
        first step creates them eagerly: :attr:`creating_buffers`)."""
        self.creating_buffers = False
        base = self.base_optimizer
        if type(base) is not torch.optim.SGD:
            return None
        if (
            base._optimizer_step_pre_hooks
            or base._optimizer_step_post_hooks
            or torch_optimizer._global_optimizer_pre_hooks
            or torch_optimizer._global_optimizer_post_hooks
        ):
            return None
        params, grads, bufs, lrs, spec = [], [], [], [], []
        for index, group in enumerate(base.param_groups):
            ps = [p for p in group["params"] if p.grad is not None]
            if not ps:
                continue
            if group.get("differentiable") or group.get("fused"):
                return None
            weight_decay, momentum = group["weight_decay"], group["momentum"]
            if isinstance(weight_decay, Tensor) or isinstance(momentum, Tensor):
                return None
            if momentum != 0:
                for p in ps:
                    state = base.state.get(p)
                    buf = None if state is None else state.get("momentum_buffer")
                    if buf is None:
                        self.creating_buffers = True
                        return None
                    bufs.append(buf)
            else:
                bufs.extend([None] * len(ps))
            lrs.append(self._lr_tensor(index, group["lr"], ps[0].device))
            if lrs[-1] is None:
                return None
            params.extend(ps)
            grads.extend(p.grad for p in ps)
            spec.append(
                (
                    len(ps),
                    float(weight_decay),
                    float(momentum),
                    float(group["dampening"]),
                    bool(group["nesterov"]),
                    bool(group["maximize"]),
                )
            )
        if not params or self.dispatch.compiled_layout(params, grads) is None:
            return None
        return SGDPlan(params, grads, bufs, lrs, tuple(spec))

    def _lr_tensor(self, index: int, lr, device: torch.device) -> Tensor | None:
        """Group ``index``'s learning rate as a 0-d float64 tensor on ``device`` (refilled each
        step, so a scheduler never recompiles); a tensor lr that requires grad has no compiled
        twin (None)."""
        if isinstance(lr, Tensor):
            if lr.requires_grad or lr.numel() != 1:
                return None
            return lr.detach().reshape(()).to(device=device, dtype=torch.float64)
        buf = self._lr_tensors.get(index)
        if buf is None or buf.device != device:
            buf = self._lr_tensors[index] = torch.zeros((), dtype=torch.float64, device=device)
        buf.fill_(lr)
        return buf
