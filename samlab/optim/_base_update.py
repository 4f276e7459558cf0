"""The base optimizer's step in a :class:`~samlab.optim.SAMBase` step, compiled for SGD.

After the passes, once the weights are restored and the final gradient is formed and clipped
(``SAMBase._update``), ``_base_step`` steps the base optimizer. On the compiled path, with
exactly ``torch.optim.SGD`` as the base, the SGD update of all groups runs as one compiled call
(:func:`kernels.compiled.sgd_step_`, bit-exact with ``torch.optim.SGD.step``; each group's lr a
0-d float64 tensor refilled every step, so an LR scheduler never recompiles); SGD's first step
(which creates the momentum buffers), other base optimizers and the cases listed in
``_sgd_plan`` run ``base_optimizer.step()``. GSAM and one-step SAM use the plan for their fused
updates. :class:`_BaseUpdate` holds these methods of :class:`~samlab.optim.SAMBase`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from kernels import compiled as _compiled


class _BaseUpdate:
    """The base step of :class:`~samlab.optim.SAMBase` (a base class of it): the compiled SGD
    step, its plan and lr tensors, or ``base_optimizer.step()``."""

    # ----------------------------------------------------------------- base step
    def _base_step(self) -> None:
        """The base optimizer's step; on the compiled path SGD's update runs as one compiled
        call (:func:`kernels.compiled.sgd_step_`, bit-exact with ``torch.optim.SGD``)."""
        plan = self._sgd_plan()
        if plan is not None:
            params, grads, bufs, lrs, spec = plan
            try:
                _compiled.compiled("sgd_step_")(params, grads, bufs, lrs, spec)
                self._base_stepped()
                return
            except Exception as err:
                self._compile_failed(err)
        self.base_optimizer.step()

    def _base_stepped(self) -> None:
        """What ``base_optimizer.step()`` records besides the update (LR schedulers built on
        the base optimizer check it)."""
        self.base_optimizer._opt_called = True

    def _sgd_plan(self):
        """``(params, grads, momentum buffers, lrs, spec)`` for the compiled SGD step, or None
        where it does not apply: the compiled path is not in use, the base is not exactly
        ``torch.optim.SGD``, a hook is registered on it, an option has no compiled twin
        (differentiable, fused, tensor weight decay), tensors differ in device or dtype, or a
        momentum buffer does not exist yet (SGD's first step creates them eagerly)."""
        self._sgd_first_step = False
        base = self.base_optimizer
        if type(base) is not torch.optim.SGD:
            return None
        from torch.optim import optimizer as _torch_optimizer

        if (
            base._optimizer_step_pre_hooks
            or base._optimizer_step_post_hooks
            or _torch_optimizer._global_optimizer_pre_hooks
            or _torch_optimizer._global_optimizer_post_hooks
        ):
            return None
        params, grads, bufs, lrs, spec = [], [], [], [], []
        for index, group in enumerate(self.param_groups):
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
                        self._sgd_first_step = True
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
        if not params or self._uniform(params, grads) is None:
            return None
        return params, grads, bufs, lrs, tuple(spec)

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
