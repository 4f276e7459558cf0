"""SAM over Adam, and plain Adam, as pure tensor functions for one traced training step.

``samlab.train.fused_step`` traces a whole step (both gradients, the perturbation, the base
update) into one ``torch.compile`` graph. What it needs from the optimizer lives here, where
the optimizers are known: :func:`fused_plan_unsupported` says whether an optimizer's step can
be written that way, and a :class:`FusedPlan` holds

* the update rules as pure functions of tensors: SAM's ascent is the pure form of the ascent
  functional (:func:`kernels.sam_ascent`, ``w + rho * g / (||g|| + perturb_eps)``) over the
  :class:`~kernels.Segment` of :meth:`FusedPlan.segment`; :meth:`FusedPlan.adam_update_` is
  the update of ``torch.optim.Adam`` (L2 weight decay, ``lerp`` of the first moment, the
  bias-corrected denominator); every hyper-parameter is read from one small tensor so that a
  schedule of lr or rho never recompiles;
* the optimizer's own state tensors (Adam's ``step``, ``exp_avg``, ``exp_avg_sq``, created as
  Adam creates them), updated in place, so ``state_dict()``, checkpoints and resumption are
  those of the eager path;
* :meth:`FusedPlan.finish`, the bookkeeping ``optimizer.step`` does besides the update
  (Adam's step counts, SAM's ``last_step`` record and step count through
  :meth:`~samlab.optim.SAMBase.record_step`).

Covered: :class:`~samlab.optim.SAM` (not adaptive, no clipping, no step hooks) over
``torch.optim.Adam``, sparse SAM (SSAM-F, SSAM-D: the masks are inputs of the graph, the
ascent :func:`kernels.sam_ascent` with them in the mask slot, its masked norm giving
``last_step["effective_radius"]``), and a plain
``torch.optim.Adam``; one param group; Adam without amsgrad, maximize, or the fused /
capturable / differentiable variants.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torch.optim import optimizer as _torch_optimizer

from kernels import Segment
from samlab.optim.sam import ASAM, SAM
from samlab.optim.ssam import SparseSAM

__all__ = ["FusedPlan", "fused_plan_unsupported"]

# slots of the float32 hyper-parameter vector handed to the graph
_RHO, _STEP_SIZE, _BC2_SQRT, _BETA1, _BETA2, _EPS, _WD, _PERTURB_EPS = range(8)


def _sam_and_adam(optimizer: torch.optim.Optimizer) -> tuple[SAM | None, torch.optim.Optimizer]:
    """(the SAM wrapper or None, the optimizer that updates)."""
    if isinstance(optimizer, SAM):  # SAM or ASAM (ASAM is refused by its adaptive flag)
        return optimizer, optimizer.base_optimizer
    return None, optimizer


def fused_plan_unsupported(optimizer: torch.optim.Optimizer) -> str | None:
    """Why this optimizer's step has no fused form, or None where it has one."""
    sam, adam = _sam_and_adam(optimizer)
    if sam is not None and type(sam) not in (SAM, ASAM) and not isinstance(sam, SparseSAM):
        # GSAM, LookSAM, one-step SAM, WSAM, FriendlySAM: subclasses with their own rule
        return (
            f"the optimizer is {type(optimizer).__name__}, whose step is not SAM's; the fused "
            "step covers SAM (and sparse SAM) over Adam and plain Adam"
        )
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
        or _torch_optimizer._global_optimizer_pre_hooks
        or _torch_optimizer._global_optimizer_post_hooks
    ):
        return "an optimizer step hook is registered"
    params = group["params"]
    if len({p.device for p in params}) != 1 or any(p.dtype != torch.float32 for p in params):
        return "parameters must all be float32 on one device"
    return None


class FusedPlan:
    """The step of one optimizer, split into the parts a traced graph runs and the rest."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        reason = fused_plan_unsupported(optimizer)
        if reason is not None:
            raise ValueError(f"no fused step for this optimizer: {reason}")
        self.optimizer = optimizer
        self.sam, self.adam = _sam_and_adam(optimizer)
        self.hyper = torch.zeros(8, dtype=torch.float32, device=self.params[0].device)

    @property
    def group(self) -> dict[str, Any]:
        """The param group, read at every step (``load_state_dict`` replaces the dicts)."""
        return self.optimizer.param_groups[0]

    @property
    def params(self) -> list[Tensor]:
        return list(self.group["params"])

    def masks(self) -> tuple[list[Tensor] | None, bool]:
        """Sparse SAM's masks in parameter order (None while dense) and its ``renormalize``."""
        sam = self.sam
        if not isinstance(sam, SparseSAM) or sam.masks() is None:
            return None, False
        return sam.masks(), bool(self.group["renormalize"])

    def two_pass(self, rho: float) -> bool:
        """A second pass is needed: a positive radius and something to perturb."""
        sam = self.sam
        return rho > 0 and not (isinstance(sam, SparseSAM) and sam.mask_density == 0.0)

    def rho(self) -> float:
        """This step's radius (0 for plain Adam); a two-pass step when positive."""
        rho = float(self.group["rho"]) if self.sam is not None else 0.0
        if not (rho >= 0 and math.isfinite(rho)):
            raise ValueError(f"rho must be a finite number >= 0, got {rho!r}")
        return rho

    def state(self) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Adam's (step, exp_avg, exp_avg_sq) per parameter, created as ``torch.optim.Adam``
        creates them on its first step."""
        steps, avgs, sqs = [], [], []
        for p in self.params:
            state = self.adam.state[p]
            if len(state) == 0:
                state["step"] = torch.tensor(0.0, dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            steps.append(state["step"])
            avgs.append(state["exp_avg"])
            sqs.append(state["exp_avg_sq"])
        return steps, avgs, sqs

    def fill_hyper(self, steps: list[Tensor], rho: float) -> Tensor:
        """Write this step's hyper-parameters (bias corrections in float64, as Adam computes
        them from its step count) into :attr:`hyper` and return it."""
        group = self.group
        step = float(steps[0]) + 1.0
        beta1, beta2 = group["betas"]
        values = [0.0] * 8
        values[_RHO] = rho
        values[_STEP_SIZE] = float(group["lr"]) / (1 - beta1**step)
        values[_BC2_SQRT] = math.sqrt(1 - beta2**step)
        values[_BETA1], values[_BETA2] = float(beta1), float(beta2)
        values[_EPS] = float(group["eps"])
        values[_WD] = float(group["weight_decay"])
        values[_PERTURB_EPS] = float(group.get("perturb_eps", 1e-12))
        self.hyper.copy_(torch.tensor(values, dtype=torch.float64))
        return self.hyper

    # ------------------------------------------------------------------ traced parts
    @staticmethod
    def segment(
        params: list[Tensor],
        grads: list[Tensor],
        hyper: Tensor,
        masks: list[Tensor] | None = None,
        mask_norm: bool = False,
    ) -> Segment:
        """SAM's ascent over the one param group: ``rho`` and ``perturb_eps`` read from
        ``hyper`` (for :func:`kernels.sam_ascent`, which returns ``w + e`` and ``||g||``),
        sparse SAM's ``masks`` in the mask slot."""
        return Segment(params, grads, hyper[_RHO], hyper[_PERTURB_EPS], None, masks, mask_norm)

    @staticmethod
    def adam_update_(
        params: list[Tensor],
        exp_avgs: list[Tensor],
        exp_avg_sqs: list[Tensor],
        grads: list[Tensor],
        hyper: Tensor,
    ) -> None:
        """``torch.optim.Adam``'s update, in place on params and moments."""
        beta1, beta2, wd = hyper[_BETA1], hyper[_BETA2], hyper[_WD]
        for p, m, v, g in zip(params, exp_avgs, exp_avg_sqs, grads, strict=True):
            g = g + wd * p  # Adam's L2 weight decay (0 by default)
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).add_((1 - beta2) * g * g)
            denom = v.sqrt() / hyper[_BC2_SQRT] + hyper[_EPS]
            p.sub_(hyper[_STEP_SIZE] * m / denom)

    # ------------------------------------------------------------------ after the graph
    def finish(
        self,
        steps: list[Tensor],
        loss: Tensor,
        perturbed_loss: Tensor | None,
        norm: Tensor | None,
        rho: float,
        masked_norm: Tensor | None = None,
    ) -> None:
        """What ``optimizer.step`` records besides the update; ``norm`` and ``masked_norm``
        are the ascent's (:class:`kernels.Shifted`): sparse SAM's ``effective_radius`` comes
        from them as on the optimizer paths."""
        for step in steps:
            step += 1
        self.adam._opt_called = True
        self.optimizer._opt_called = True
        if self.sam is None:
            return
        last: dict[str, Any] = {
            "passes": 2 if perturbed_loss is not None else 1,
            "skipped": False,
            "rho": [rho],
            "clean_loss": loss.detach(),
        }
        if isinstance(self.sam, SparseSAM):
            last.update(mask_density=self.sam.mask_density, mask_overlap=self.sam.mask_overlap)
        if perturbed_loss is not None:
            last["grad_norm"] = norm.detach()
            last["perturbed_loss"] = perturbed_loss.detach()
            last["sharpness_gap"] = last["perturbed_loss"] - last["clean_loss"]
            if isinstance(self.sam, SparseSAM):
                last["effective_radius"] = self.sam.effective_radius(
                    norm.detach(), None if masked_norm is None else masked_norm.detach()
                )
        self.sam.record_step(last)
