"""``torch.compile`` fast paths of the SAM tensor-list ops (the CPU fast path).

On CPU, ``torch._foreach_*`` ops measured slower than the per-tensor loop, while compiled
updates fuse each list operation into a few C++ loops (see ``benchmarks/optim_step.py``). The
compiled functions here are the reference loops of :mod:`kernels.sam_ops` under
``torch.compile``; tests check in float64 that they agree with the loops.

Compilation needs a C++ compiler (CPU) or Triton (CUDA). :func:`compiler_available` tells;
:func:`compiled` returns the compiled function or raises ``RuntimeError`` with the reason, and
callers fall back to the loop with one warning.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = [
    "axpy_into",
    "compiled",
    "compiler_available",
    "dot_into",
    "gsam_combine_into",
    "gsam_fused_into",
    "norm_sq_into",
    "pair_stats_into",
    "perturb_into",
]


@functools.cache
def compiler_available() -> bool:
    """True when inductor can build CPU kernels here (a C++ compiler is on PATH)."""
    if os.environ.get("SAMLAB_NO_COMPILE", "") not in ("", "0"):
        return False
    cxx = os.environ.get("CXX", "")
    return bool((cxx and shutil.which(cxx)) or shutil.which("g++") or shutil.which("clang++"))


def norm_sq_into(tensors: Sequence[Tensor], weights_eta: float | None) -> Tensor:
    """``sum_i ||T_i x_i||^2`` (``T_i = |w_i| + eta`` when ``weights_eta`` is given).

    Written as the loop; compiled it becomes one fused reduction. ``tensors`` is a list of
    gradients, or of (param, grad) pairs flattened as [p0, g0, p1, g1, ...] when adaptive.
    """
    if weights_eta is None:
        return torch.stack([torch.sum(t * t) for t in tensors]).sum()
    pairs = zip(tensors[0::2], tensors[1::2])
    return torch.stack([torch.sum(((p.abs() + weights_eta) * g) ** 2) for p, g in pairs]).sum()


def perturb_into(
    out: Sequence[Tensor],
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    scale: Tensor,
    eta: float | None,
) -> None:
    """``out_i <- w_i + e_i`` with ``e_i = scale * g_i`` or ``scale * (|w_i| + eta)^2 g_i``."""
    for o, p, g in zip(out, params, grads):
        if eta is None:
            o.copy_(p + scale * g)
        else:
            t = p.abs() + eta
            o.copy_(p + scale * (t * t) * g)


def dot_into(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    """``sum_i <a_i, b_i>`` (GSAM's and LookSAM's inner product), one fused reduction."""
    return torch.stack([torch.sum(x * y) for x, y in zip(a, b)]).sum()


def pair_stats_into(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    """``[||a||^2, ||b||^2, <a, b>]`` in one pass over both lists."""
    return torch.stack(
        [
            torch.stack([torch.sum(x * x) for x in a]).sum(),
            torch.stack([torch.sum(y * y) for y in b]).sum(),
            torch.stack([torch.sum(x * y) for x, y in zip(a, b)]).sum(),
        ]
    )


def gsam_combine_into(
    g_p: Sequence[Tensor], g: Sequence[Tensor], coef: Tensor, alpha: Tensor
) -> None:
    """``g_p <- g_p - alpha * (g - coef * g_p)`` (GSAM's final gradient), in place."""
    for gp, gi in zip(g_p, g):
        gp.copy_(gp - alpha * (gi - coef * gp))


def gsam_fused_into(
    g_p: Sequence[Tensor], g: Sequence[Tensor], alpha: Tensor, eps: float
) -> Tensor:
    """GSAM's whole decomposition in one graph: the statistics of ``g`` and ``g_p``, then
    ``g_p <- g_p - alpha * (g - coef * g_p)``; returns ``cos``."""
    norm_g = torch.stack([torch.sum(x * x) for x in g]).sum().sqrt()
    norm_gp = torch.stack([torch.sum(y * y) for y in g_p]).sum().sqrt()
    inner = torch.stack([torch.sum(x * y) for x, y in zip(g, g_p)]).sum()
    cos = inner / (norm_g * norm_gp + eps)
    coef = cos * norm_g / (norm_gp + eps)
    for gp, gi in zip(g_p, g):
        gp.copy_(gp - alpha * (gi - coef * gp))
    return cos


def axpy_into(out: Sequence[Tensor], x: Sequence[Tensor], y: Sequence[Tensor], s: Tensor) -> None:
    """``out <- x + s * y`` (``out`` may be ``x``)."""
    for o, xi, yi in zip(out, x, y):
        o.copy_(xi + s * yi)


_FUNCTIONS = {
    "norm_sq_into": norm_sq_into,
    "dot_into": dot_into,
    "perturb_into": perturb_into,
    "pair_stats_into": pair_stats_into,
    "gsam_combine_into": gsam_combine_into,
    "gsam_fused_into": gsam_fused_into,
    "axpy_into": axpy_into,
}


@functools.cache
def compiled(name: str) -> Callable:
    """The compiled version of one of the functions of this module (by name)."""
    if not compiler_available():
        raise RuntimeError("no C++ compiler found for torch.compile (install g++ or set CXX)")
    fn = _FUNCTIONS[name]
    return torch.compile(fn, dynamic=False)
