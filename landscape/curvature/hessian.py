"""The top Hessian eigenvalue of any model's loss, by power iteration.

:func:`hessian_top_eigenvalue` runs power iteration on Hessian-vector products (double backward,
:func:`hessian_vector_product`) of the *mean* loss over a fixed set of batches, and reports the
Rayleigh quotient ``v^T H v`` with ``||v|| = 1``: the textbook estimate, not the official
SAMformer code's ``|g^T H v|`` on a per-sample loss vector. Power iteration converges to the
eigenvalue of largest magnitude; where that one is negative (an early-stopped model need not sit
at a minimum), a second power iteration on ``H - mu I`` with ``mu`` that negative eigenvalue
finds the top (algebraically largest) one, which is what is reported.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

__all__ = ["HessianEigen", "hessian_top_eigenvalue", "hessian_vector_product"]


@dataclass
class HessianEigen:
    """Result of :func:`hessian_top_eigenvalue`."""

    eigenvalue: float
    iterations: int
    converged: bool
    relative_change: float
    history: list[float] = field(default_factory=list)


def hessian_vector_product(
    model: nn.Module,
    params: Sequence[Tensor],
    batches: Sequence[tuple[Tensor, Tensor]],
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    vector: Sequence[Tensor],
) -> list[Tensor]:
    """``H v`` of the sample-weighted mean of ``loss_fn`` over ``batches`` (double backward,
    one batch at a time; ``vector`` is shaped like ``params``)."""
    total = sum(len(x) for x, _ in batches)
    out = [torch.zeros_like(p) for p in params]
    for x, y in batches:
        loss = loss_fn(model(x), y) * (len(x) / total)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        dot = sum((g * v).sum() for g, v in zip(grads, vector, strict=True))
        hv = torch.autograd.grad(dot, params)
        for acc, h in zip(out, hv, strict=True):
            acc.add_(h.detach())
    return out


def _normalise(vector: list[Tensor]) -> list[Tensor]:
    norm = math.sqrt(sum(float((v * v).sum()) for v in vector))
    if norm == 0.0:
        return vector
    return [v / norm for v in vector]


def hessian_top_eigenvalue(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    loss_fn: Callable[[Tensor, Tensor], Tensor] = nn.functional.mse_loss,
    *,
    iters: int = 50,
    tol: float = 1e-4,
    seed: int = 0,
) -> HessianEigen:
    """Top Hessian eigenvalue of ``loss_fn`` (mean over all samples of ``batches``).

    ``batches`` is materialised once (a fixed evaluation set); the model is put in eval mode
    (dropout off, BatchNorm frozen) and restored afterwards. Iteration stops when the relative
    change of the estimate falls below ``tol`` or after ``iters`` products. The start vector
    is Gaussian from a CPU generator seeded with ``seed``.
    """
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    batches = list(batches)
    if not batches:
        raise ValueError("hessian_top_eigenvalue needs at least one batch of data")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    gen = torch.Generator().manual_seed(seed)
    vector = _normalise(
        [torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device) for p in params]
    )
    was_training = model.training
    model.eval()
    try:
        # Fused attention kernels have no double backward; the math kernel does.
        with sdpa_kernel(SDPBackend.MATH):
            history, change = _power_iteration(model, params, batches, loss_fn, vector, iters, tol)
            if history[-1] < 0:  # the dominant eigenvalue is negative: shift it away
                shift = history[-1]
                shifted, change = _power_iteration(
                    model, params, batches, loss_fn, vector, iters, tol, shift=shift
                )
                history += [value + shift for value in shifted]
    finally:
        model.train(was_training)
    return HessianEigen(
        eigenvalue=history[-1],
        iterations=len(history),
        converged=change < tol,
        relative_change=change,
        history=history,
    )


def _power_iteration(model, params, batches, loss_fn, vector, iters, tol, shift: float = 0.0):
    """Power iteration on ``H - shift * I``; the estimates are of its eigenvalue."""
    history: list[float] = []
    change = math.inf
    for _ in range(iters):
        hv = hessian_vector_product(model, params, batches, loss_fn, vector)
        if shift:
            hv = [h - shift * v for h, v in zip(hv, vector, strict=True)]
        estimate = sum(float((h * v).sum()) for h, v in zip(hv, vector, strict=True))
        if history:
            change = abs(estimate - history[-1]) / max(abs(estimate), 1e-30)
        history.append(estimate)
        vector = _normalise(hv)
        if change < tol:
            break
    return history, change
