"""A whole training step as one ``torch.compile`` graph, for small models that store nothing.

For a model such as SAMformer (~83k parameters) a step is dominated by per-operation overhead:
the autograd engine, two closure calls, the perturbation and restore, Adam's per-parameter
updates. :class:`FusedStep` traces the whole step with ``torch.func`` instead and compiles it
once: both gradients (``grad_and_value`` of the loss at ``w`` and at ``w + e``), SAM's
perturbation ``e = rho * g / (||g|| + perturb_eps)`` and the Adam update, in place on the
model's parameters and the base optimizer's own state tensors, so checkpoints, resumption and
``optimizer.state_dict()`` are the same as on the eager path. It computes what ``optimizer.step
(closure)`` computes (same losses within float tolerance), and returns the clean-point loss.

What it takes (:func:`fused_step_unsupported` gives the reason where not):

* the optimizer: samlab's :class:`~samlab.optim.SAM` (non-adaptive, no clipping) with
  ``torch.optim.Adam`` as its base, or a plain ``torch.optim.Adam``; one param group; Adam
  without amsgrad, maximize, or the fused/capturable/differentiable variants; no step hooks;
* the model: no buffers (nothing that training updates in place, such as BatchNorm's running
  statistics), its trainable parameters exactly the optimizer's, all float32 on one device;
* the loss: ``loss_fn(model(x), y)`` for tensors x, y.

Three-dimensional windows ``(B, T, D)`` go into the graph in channel-major memory (the same
values): a forecaster's per-channel reductions over time then run over contiguous memory,
which is what makes the compiled step fast on CPU for D = 7 channels. Gradients are not left
in ``p.grad`` (the graph does not write them). Hyper-parameters (lr, rho, betas, eps, weight
decay) are graph inputs, so a learning-rate schedule never recompiles.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value

__all__ = ["FusedStep", "fused_step_unsupported", "try_fused_step"]

# hyper-parameter slots of the float32 vector handed to the graph
_RHO, _STEP_SIZE, _BC2_SQRT, _BETA1, _BETA2, _EPS, _WD, _PERTURB_EPS = range(8)


def _sam_and_adam(optimizer: torch.optim.Optimizer) -> tuple[Any | None, torch.optim.Adam]:
    """(the SAM wrapper or None, the Adam that updates)."""
    from samlab.optim.sam import SAM

    if isinstance(optimizer, SAM):  # SAM or ASAM (ASAM is refused by its adaptive flag)
        return optimizer, optimizer.base_optimizer
    return None, optimizer


def fused_step_unsupported(model: nn.Module, optimizer: torch.optim.Optimizer) -> str | None:
    """Why :class:`FusedStep` cannot run this model and optimizer, or None where it can."""
    from torch.optim import optimizer as torch_optimizer

    sam, adam = _sam_and_adam(optimizer)
    if type(adam) is not torch.optim.Adam:
        return (
            f"the optimizer is {type(optimizer).__name__}"
            + (f" over {type(adam).__name__}" if sam is not None else "")
            + "; the fused step covers SAM over Adam and plain Adam"
        )
    if len(optimizer.param_groups) != 1:
        return "the optimizer has several param groups"
    group = optimizer.param_groups[0]
    if sam is not None:
        if group.get("adaptive") or sam.max_grad_norm is not None:
            return "ASAM (adaptive) and gradient clipping are not fused"
        if sam._optimizer_step_pre_hooks or sam._optimizer_step_post_hooks:
            return "the SAM optimizer has step hooks"
    for key in ("amsgrad", "maximize", "fused", "capturable", "differentiable"):
        if group.get(key):
            return f"Adam option {key}=True is not fused"
    if any(isinstance(group[key], Tensor) for key in ("lr", "weight_decay", "eps")):
        return "tensor-valued lr, weight_decay or eps"
    if (
        adam._optimizer_step_pre_hooks
        or adam._optimizer_step_post_hooks
        or torch_optimizer._global_optimizer_pre_hooks
        or torch_optimizer._global_optimizer_post_hooks
    ):
        return "an optimizer step hook is registered"
    if next(model.buffers(), None) is not None:
        return "the model has buffers (e.g. BatchNorm running statistics) that training updates"
    trainable = [p for p in model.parameters() if p.requires_grad]
    if {id(p) for p in trainable} != {id(p) for p in group["params"]} or len(trainable) != len(
        group["params"]
    ):
        return "the optimizer's parameters are not exactly the model's trainable parameters"
    devices = {p.device for p in model.parameters()}
    if len(devices) != 1 or any(p.dtype != torch.float32 for p in model.parameters()):
        return "parameters must all be float32 on one device"
    return None


class FusedStep:
    """``step(x, y)``: one SAM (or Adam) step of ``model`` on the batch, as one compiled graph.

    Same effect as ``optimizer.step(make_closure(model, loss_fn, x, y, optimizer))`` on the
    parameters and on the optimizer's state (see the module notes); returns the loss at ``w``
    as a detached 0-d tensor. Raises ``ValueError`` where :func:`fused_step_unsupported` gives a
    reason. Compilation happens at the first call; :class:`FusedStep` itself never falls back —
    the caller decides (the forecasting trainer reverts to its eager loop with a warning).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: Callable[[Tensor, Tensor], Tensor] = nn.functional.mse_loss,
    ) -> None:
        reason = fused_step_unsupported(model, optimizer)
        if reason is not None:
            raise ValueError(f"FusedStep cannot run this setup: {reason}")
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.sam, self.adam = _sam_and_adam(optimizer)
        self.group = optimizer.param_groups[0]
        self._names = [n for n, p in model.named_parameters() if p.requires_grad]
        self._frozen = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
        device = next(iter(self.group["params"])).device
        self._hyper = torch.zeros(8, dtype=torch.float32, device=device)
        self._graphs: dict[bool, Callable] = {}

    # ------------------------------------------------------------------ the traced step
    def _loss(self, params: list[Tensor], x: Tensor, y: Tensor) -> Tensor:
        named = dict(zip(self._names, params, strict=True))
        named.update(self._frozen)
        if x.ndim == 3:  # channel-major memory in, the model's (B, T, D) view
            x, y = x.transpose(1, 2), y.transpose(1, 2)
        return self.loss_fn(functional_call(self.model, named, (x,)), y)

    def _step(self, params, exp_avgs, exp_avg_sqs, hyper, x, y, two_pass: bool):
        grads, loss = grad_and_value(self._loss)(params, x, y)
        perturbed_loss = norm = None
        if two_pass:
            norm = torch.sqrt(sum((g * g).sum() for g in grads))
            scale = hyper[_RHO] / (norm + hyper[_PERTURB_EPS])
            shifted = [p + scale * g for p, g in zip(params, grads, strict=True)]
            grads, perturbed_loss = grad_and_value(self._loss)(shifted, x, y)
        beta1, beta2, wd = hyper[_BETA1], hyper[_BETA2], hyper[_WD]
        for p, m, v, g in zip(params, exp_avgs, exp_avg_sqs, grads, strict=True):
            g = g + wd * p  # Adam's L2 weight decay (0 by default)
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).add_((1 - beta2) * g * g)
            denom = v.sqrt() / hyper[_BC2_SQRT] + hyper[_EPS]
            p.sub_(hyper[_STEP_SIZE] * m / denom)
        return loss, perturbed_loss, norm

    def _graph(self, two_pass: bool) -> Callable:
        graph = self._graphs.get(two_pass)
        if graph is None:

            def run(params, exp_avgs, exp_avg_sqs, hyper, x, y):
                return self._step(params, exp_avgs, exp_avg_sqs, hyper, x, y, two_pass)

            graph = self._graphs[two_pass] = torch.compile(run, fullgraph=True, dynamic=False)
        return graph

    # ------------------------------------------------------------------ state
    def _adam_state(self, params: list[nn.Parameter]) -> tuple[list, list, list]:
        """Adam's (step, exp_avg, exp_avg_sq) per parameter, created as ``torch.optim.Adam``
        creates them on its first step."""
        steps, avgs, sqs = [], [], []
        for p in params:
            state = self.adam.state[p]
            if len(state) == 0:
                state["step"] = torch.tensor(0.0, dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            steps.append(state["step"])
            avgs.append(state["exp_avg"])
            sqs.append(state["exp_avg_sq"])
        return steps, avgs, sqs

    def _fill_hyper(self, step: float, rho: float) -> None:
        group = self.group
        beta1, beta2 = group["betas"]
        lr = float(group["lr"])
        values = [0.0] * 8
        values[_RHO] = rho
        values[_STEP_SIZE] = lr / (1 - beta1**step)
        values[_BC2_SQRT] = math.sqrt(1 - beta2**step)
        values[_BETA1], values[_BETA2] = float(beta1), float(beta2)
        values[_EPS] = float(group["eps"])
        values[_WD] = float(group["weight_decay"])
        values[_PERTURB_EPS] = float(group.get("perturb_eps", 1e-12))
        self._hyper.copy_(torch.tensor(values, dtype=torch.float64))

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        params = list(self.group["params"])
        steps, avgs, sqs = self._adam_state(params)
        step = float(steps[0]) + 1.0
        rho = float(self.group["rho"]) if self.sam is not None else 0.0
        if not (rho >= 0 and math.isfinite(rho)):
            raise ValueError(f"rho must be a finite number >= 0, got {rho!r}")
        self._fill_hyper(step, rho)
        two_pass = rho > 0
        if x.ndim == 3:
            x, y = x.transpose(1, 2).contiguous(), y.transpose(1, 2).contiguous()
        with torch.no_grad():
            detached = [p.detach() for p in params]  # the same storage: updates land in place
        loss, perturbed_loss, norm = self._graph(two_pass)(detached, avgs, sqs, self._hyper, x, y)
        for s in steps:
            s += 1
        self._record(loss, perturbed_loss, norm, rho)
        return loss.detach()

    def _record(self, loss, perturbed_loss, norm, rho: float) -> None:
        """What ``optimizer.step`` records besides the update."""
        self.adam._opt_called = True
        optimizer = self.sam if self.sam is not None else self.adam
        optimizer._opt_called = True
        if self.sam is None:
            return
        sam = self.sam
        last = {"passes": 2 if perturbed_loss is not None else 1, "skipped": False, "rho": [rho]}
        last["clean_loss"] = loss.detach()
        if perturbed_loss is not None:
            last["grad_norm"] = norm.detach()
            last["perturbed_loss"] = perturbed_loss.detach()
            last["sharpness_gap"] = last["perturbed_loss"] - last["clean_loss"]
        sam.last_step = last
        sam._step_index += 1


def try_fused_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn=nn.functional.mse_loss
) -> FusedStep | None:
    """A :class:`FusedStep`, or None (silently) where the setup is not covered."""
    if fused_step_unsupported(model, optimizer) is not None:
        return None
    return FusedStep(model, optimizer, loss_fn)


def warn_unfused(reason: str) -> None:
    warnings.warn(
        f"the compiled training step failed ({reason}); training with the eager step instead",
        RuntimeWarning,
        stacklevel=3,
    )
