"""Closures for the SAM family: BatchNorm policy, AMP, gradient accumulation, DDP modes.

The closure owns model policy (DESIGN.md §4); the optimizer only says which pass it runs
(``optimizer.current_pass`` / ``optimizer.single_pass``, see docs/closure-protocol.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["BN_POLICIES", "PERTURBATION_MODES", "SAMClosure", "bn_update_context", "make_closure"]

BN_POLICIES = ("clean", "perturbed", "both", "none")
PERTURBATION_MODES = ("global", "per_worker")


def _should_update_bn(policy: str, current_pass: str | None, single_pass: bool) -> bool:
    if policy == "none":
        return False
    if policy == "both" or current_pass is None or single_pass:
        return True
    return policy == current_pass


@contextlib.contextmanager
def bn_update_context(model: nn.Module, update: bool) -> Iterator[None]:
    """Within the block, BatchNorm layers in training mode use batch statistics and update
    their running statistics only if ``update`` (``track_running_stats`` is switched off
    temporarily, so running means, variances and ``num_batches_tracked`` stay untouched)."""
    if update:
        yield
        return
    switched = [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats
    ]
    for m in switched:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in switched:
            m.track_running_stats = True


class SAMClosure:
    """Callable closure: zero-grads, forward, backward, returns the (detached) loss.

    ``last_outputs`` holds the model outputs of the latest pass at ``w`` (or of the single
    pass), for accuracy bookkeeping; ``calls`` counts passes.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[Any, Any], Tensor],
        inputs: Any,
        targets: Any,
        optimizer: torch.optim.Optimizer,
        *,
        bn_policy: str = "clean",
        perturbation: str = "global",
        scaler: torch.amp.GradScaler | None = None,
        micro_batches: int = 1,
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        if bn_policy not in BN_POLICIES:
            raise ValueError(f"bn_policy must be one of {BN_POLICIES}, got {bn_policy!r}")
        if perturbation not in PERTURBATION_MODES:
            raise ValueError(
                f"perturbation must be one of {PERTURBATION_MODES}, got {perturbation!r}"
            )
        if not isinstance(micro_batches, int) or micro_batches < 1:
            raise ValueError(f"micro_batches must be an integer >= 1, got {micro_batches!r}")
        n = len(inputs)
        if micro_batches > n:
            raise ValueError(f"micro_batches={micro_batches} exceeds the batch size {n}")
        if perturbation == "per_worker" and not hasattr(model, "no_sync"):
            raise ValueError(
                "perturbation='per_worker' needs a DistributedDataParallel model (it wraps the "
                "clean pass in model.no_sync()); wrap the model in DDP or use 'global'"
            )
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.inputs, self.targets = inputs, targets
        self.bn_policy, self.perturbation = bn_policy, perturbation
        self.scaler, self.micro_batches, self.autocast_dtype = scaler, micro_batches, autocast_dtype
        self.last_outputs: Any = None
        self.calls = 0

    def _chunks(self) -> list[tuple[Any, Any, float]]:
        n = len(self.inputs)
        if self.micro_batches == 1:
            return [(self.inputs, self.targets, 1.0)]
        sizes = [
            n // self.micro_batches + (i < n % self.micro_batches)
            for i in range(self.micro_batches)
        ]
        out, start = [], 0
        for size in sizes:
            out.append(
                (self.inputs[start : start + size], self.targets[start : start + size], size / n)
            )
            start += size
        return out

    def __call__(self) -> Tensor:
        self.calls += 1
        current = getattr(self.optimizer, "current_pass", None)
        single = getattr(self.optimizer, "single_pass", False)
        update_bn = _should_update_bn(self.bn_policy, current, single)
        sync_off = self.perturbation == "per_worker" and current == "clean" and not single
        self.optimizer.zero_grad(set_to_none=True)
        total = None
        outputs = []
        sync_ctx = self.model.no_sync() if sync_off else contextlib.nullcontext()
        with sync_ctx, bn_update_context(self.model, update_bn):
            for x, y, weight in self._chunks():
                if self.autocast_dtype is not None:
                    device_type = x.device.type if isinstance(x, Tensor) else "cpu"
                    ctx = torch.autocast(device_type, dtype=self.autocast_dtype)
                else:
                    ctx = contextlib.nullcontext()
                with ctx:
                    out = self.model(x)
                    loss = self.loss_fn(out, y) * weight
                (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
                total = loss.detach() if total is None else total + loss.detach()
                outputs.append(out.detach())
        if current != "perturbed" or single:
            self.last_outputs = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
        return total


def make_closure(
    model: nn.Module,
    loss_fn: Callable[[Any, Any], Tensor],
    inputs: Any,
    targets: Any,
    optimizer: torch.optim.Optimizer,
    **options: Any,
) -> SAMClosure:
    """A closure for ``optimizer.step(closure)`` on one batch.

    Options: ``bn_policy`` ("clean" default, "perturbed", "both", "none"), ``perturbation``
    ("global" default, "per_worker": ``no_sync`` around the clean pass of a DDP model),
    ``scaler`` (a ``torch.amp.GradScaler``; also pass it to ``step``), ``micro_batches``
    (gradient accumulation, exact mean over the batch), ``autocast_dtype``
    (``torch.bfloat16`` / ``torch.float16``). Works for plain torch optimizers too (one pass).
    """
    return SAMClosure(model, loss_fn, inputs, targets, optimizer, **options)
