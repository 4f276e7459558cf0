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

* an optimizer with a fused form (SAM over Adam, or Adam; see
  :func:`samlab.optim.fused.fused_plan_unsupported`: the update rules and the optimizer's
  bookkeeping live there);
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

import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value

from kernels import sam_ascent
from samlab.optim.fused import FusedPlan, fused_plan_unsupported

__all__ = ["FusedStep", "fused_step_unsupported", "try_fused_step"]


def fused_step_unsupported(model: nn.Module, optimizer: torch.optim.Optimizer) -> str | None:
    """Why :class:`FusedStep` cannot run this model and optimizer, or None where it can."""
    reason = fused_plan_unsupported(optimizer)
    if reason is not None:
        return reason
    if next(model.buffers(), None) is not None:
        return "the model has buffers (e.g. BatchNorm running statistics) that training updates"
    trainable = [p for p in model.parameters() if p.requires_grad]
    params = optimizer.param_groups[0]["params"]
    if {id(p) for p in trainable} != {id(p) for p in params} or len(trainable) != len(params):
        return "the optimizer's parameters are not exactly the model's trainable parameters"
    if len({p.device for p in model.parameters()}) != 1:
        return "parameters must all be on one device"
    return None


class FusedStep:
    """``step(x, y)``: one SAM (or Adam) step of ``model`` on the batch, as one compiled graph.

    Same effect as ``optimizer.step(make_closure(model, loss_fn, x, y, optimizer))`` on the
    parameters and on the optimizer's state (see the module notes); returns the loss at ``w``
    as a detached 0-d tensor. Raises ``ValueError`` where :func:`fused_step_unsupported` gives a
    reason. Compilation happens at the first call; :class:`FusedStep` itself never falls back:
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
        self.plan = FusedPlan(optimizer)
        self._names = [n for n, p in model.named_parameters() if p.requires_grad]
        self._frozen = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
        self._graphs: dict[bool, Callable] = {}
        self._mask_norm = False

    def _loss(self, params: list[Tensor], x: Tensor, y: Tensor) -> Tensor:
        named = dict(zip(self._names, params, strict=True))
        named.update(self._frozen)
        x, y = _channel_major(x), _channel_major(y)  # its own inverse: the model's views
        return self.loss_fn(functional_call(self.model, named, (x,)), y)

    def _step(self, params, exp_avgs, exp_avg_sqs, hyper, x, y, masks, two_pass: bool):
        grads, loss = grad_and_value(self._loss)(params, x, y)
        perturbed_loss = norm = masked_norm = None
        if two_pass:
            segment = FusedPlan.segment(params, grads, hyper, masks, self._mask_norm)
            shifted, norm, masked_norm = sam_ascent([segment])
            grads, perturbed_loss = grad_and_value(self._loss)(shifted, x, y)
        FusedPlan.adam_update_(params, exp_avgs, exp_avg_sqs, grads, hyper)
        return loss, perturbed_loss, norm, masked_norm

    def _graph(self, two_pass: bool) -> Callable:
        graph = self._graphs.get(two_pass)
        if graph is None:

            def run(params, exp_avgs, exp_avg_sqs, hyper, x, y, masks):
                return self._step(params, exp_avgs, exp_avg_sqs, hyper, x, y, masks, two_pass)

            graph = self._graphs[two_pass] = torch.compile(run, fullgraph=True, dynamic=False)
        return graph

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        plan = self.plan
        steps, avgs, sqs = plan.state()
        rho = plan.rho()
        hyper = plan.fill_hyper(steps, rho)
        x, y = _channel_major(x).contiguous(), _channel_major(y).contiguous()
        detached = [p.detach() for p in plan.params]  # same storage: updates land in place
        masks, self._mask_norm = plan.masks()  # sparse SAM: a new graph after the first refresh
        graph = self._graph(plan.two_pass(rho))
        loss, perturbed_loss, norm, masked_norm = graph(detached, avgs, sqs, hyper, x, y, masks)
        plan.finish(steps, loss, perturbed_loss, norm, rho, masked_norm)
        return loss.detach()


def _channel_major(t: Tensor) -> Tensor:
    """A 3-D window (B, T, D) as (B, D, T); anything else unchanged."""
    return t.transpose(1, 2) if t.ndim == 3 else t


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
