"""``torch.compile`` fast paths of the SAM tensor-list ops (the CPU fast path).

On CPU, compiled updates fuse each list operation into a few C++ loops, several times faster
than ``torch._foreach_*`` or the per-tensor loop (see ``benchmarks/optim_step.py``). The
compiled functions here are the reference loops of :mod:`kernels.sam_ops` (and, for the fused
base steps, ``torch.optim.SGD``'s own update) under ``torch.compile``; tests check in float64
that they agree with the loops, and that the SGD update is bit-exact with ``torch.optim.SGD``.

Three things keep them fast on models with many small tensors (a ViT's ~80 tensors):

* **One call per phase.** Every compiled call pays a fixed cost (dynamo's guards over each
  tensor argument, the AOT/inductor wrappers, one buffer per reduction), so the optimizers use
  whole-phase graphs: :func:`ascent_into` (norm and perturbation), :func:`sgd_step_` (the
  base step, also keeping one-step SAM's gradient), :func:`gsam_sgd_step_` (GSAM's
  decomposition and the base step in one pass over the gradients) and :func:`wsam_sgd_step_`
  (WSAM's weighted gradient and the base step).
* **No cascade summation.** Inductor sums float32 reductions longer than 4096 elements with a
  cascade helper that is several times slower than the memory stream; :func:`_sum_sq` and
  :func:`_sum_prod` reduce rows of 4096 first, then the row sums.
* **One graph per shape set, shared.** The functions take plain tensor lists, so optimizer
  instances on models of equal shapes share a compiled graph; ``fullgraph=True`` with a
  per-function ``recompile_limit`` makes an exhausted cache raise (callers warn once and fall
  back to the loop) instead of dynamo's silent switch to eager.

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
    "RECOMPILE_LIMIT",
    "ascent_into",
    "axpy_into",
    "compiled",
    "compiler_available",
    "dot_into",
    "gsam_combine_into",
    "gsam_fused_into",
    "gsam_sgd_step_",
    "norm_sq_into",
    "pair_stats_into",
    "perturb_into",
    "perturbation",
    "sgd_step_",
    "wsam_sgd_step_",
]

#: graphs kept per function (one per set of tensor shapes/dtypes and per option set); beyond
#: it the call raises and the optimizer warns and falls back to the loop
RECOMPILE_LIMIT = 64
#: row length of the two-level reductions (inductor's cascade summation starts above it)
_ROW = 4096


@functools.cache
def compiler_available() -> bool:
    """True when inductor can build CPU kernels here (a C++ compiler is on PATH)."""
    if os.environ.get("SAMLAB_NO_COMPILE", "") not in ("", "0"):
        return False
    cxx = os.environ.get("CXX", "")
    return bool((cxx and shutil.which(cxx)) or shutil.which("g++") or shutil.which("clang++"))


# ------------------------------------------------------------------------------- helpers
def _total(values: Sequence[Tensor]) -> Tensor:
    """Sum of 0-d tensors as a chain of adds (cheaper per call than ``stack().sum()``)."""
    total = values[0]
    for v in values[1:]:
        total = total + v
    return total


def _sum_prod(x: Tensor, y: Tensor) -> Tensor:
    """``sum(x * y)`` over all elements: rows of ``_ROW`` first, then the row sums."""
    fx, fy = x.reshape(-1), y.reshape(-1)
    n = fx.numel()
    rows = n // _ROW
    if rows == 0:
        return torch.sum(fx * fy)
    head = rows * _ROW
    s = torch.sum(torch.sum(fx[:head].view(rows, _ROW) * fy[:head].view(rows, _ROW), 1))
    if head < n:
        s = s + torch.sum(fx[head:] * fy[head:])
    return s


def _sum_sq(x: Tensor) -> Tensor:
    """``sum(x * x)`` (see :func:`_sum_prod`)."""
    return _sum_prod(x, x)


def _fma(a: Tensor, b: Tensor | float, c: Tensor) -> Tensor:
    """``a * b + c`` rounded once, as eager CPU computes ``c.add(a, alpha=b)``."""
    return torch.ops.prims.fma(a, b, c)


# ------------------------------------------------------------------------------- kernels
def norm_sq_into(tensors: Sequence[Tensor], weights_eta: float | None) -> Tensor:
    """``sum_i ||T_i x_i||^2`` (``T_i = |w_i| + eta`` when ``weights_eta`` is given).

    ``tensors`` is a list of gradients, or of (param, grad) pairs flattened as
    [p0, g0, p1, g1, ...] when adaptive.
    """
    if weights_eta is None:
        return _total([_sum_sq(t) for t in tensors])
    pairs = zip(tensors[0::2], tensors[1::2])
    return _total([_sum_sq((p.abs() + weights_eta) * g) for p, g in pairs])


def perturbation(
    w: Tensor, d: Tensor, scale: Tensor, eta: float | None, mask: Tensor | None = None
) -> Tensor:
    """SAM's perturbation of one tensor: ``e = d * scale`` (SAM), or with ASAM's
    ``T = |w| + eta``: ``e = T * T * d * scale``, in that order of operations; sparse SAM's
    boolean ``mask`` (shaped like ``w``) multiplies last (``e * 1`` is exact, so an all-True
    mask is SAM bit for bit).

    The one per-tensor rule of the ascent: the loop adds it in place, :func:`perturb_into` and
    :func:`ascent_into` trace it, the pure form of :func:`kernels.ascent.sam_ascent` returns
    ``w + e``.
    """
    if eta is None:
        e = d * scale
    else:
        t = w.abs() + eta
        e = t * t * d * scale
    return e if mask is None else e * mask


def perturb_into(
    out: Sequence[Tensor],
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    scale: Tensor,
    eta: float | None,
) -> None:
    """``out_i <- w_i + e_i`` with ``e_i = scale * g_i`` or ``scale * (|w_i| + eta)^2 g_i``."""
    for o, p, g in zip(out, params, grads):
        o.copy_(p + perturbation(p, g, scale, eta))


def ascent_into(
    out: Sequence[Tensor],
    params: Sequence[Tensor],
    dirs: Sequence[Tensor],
    rhos: Sequence[Tensor],
    spec: tuple[tuple[int, float, float | None] | tuple[int, float, float | None, bool], ...],
    masks: Sequence[Tensor | None] | None = None,
    mask_norm: tuple[bool, ...] | None = None,
) -> Tensor:
    """SAM's / ASAM's whole ascent in one graph; returns the global norm ``||g||``.

    The lists are the concatenation of segments (param groups); ``spec[k] = (count, eps,
    eta[, normalize])`` describes segment ``k`` (``eta`` None: SAM, else ASAM's
    ``T = |w| + eta``) and ``rhos[k]`` is its radius (a 0-d tensor, so a rho schedule does not
    recompile). The norm is global over the segments that normalize; segment ``k`` writes
    ``out_i <- w_i + rho_k / (||g|| + eps_k) * g_i`` (times ``T_i^2`` for ASAM), or
    ``w_i + rho_k * g_i`` where it does not normalize (bSAM; the norm is 0 where none does).

    Sparse SAM: ``masks`` (one boolean tensor or None per weight) multiply each
    perturbation, and the graph also reduces ``||m g||`` in the same pass over the gradients;
    segment ``k`` divides by it instead of ``||g||`` where ``mask_norm[k]`` (the radius is
    then ``rho``). With masks the result is ``[||g||, ||m g||]``.
    """
    spec = tuple((*seg, True) if len(seg) == 3 else tuple(seg) for seg in spec)
    squares, masked = [], []
    start = 0
    for count, _, eta, normalize in spec:
        for i in range(start, start + count):
            if not normalize:
                continue
            v = dirs[i] if eta is None else (params[i].abs() + eta) * dirs[i]
            squares.append(_sum_sq(v))
            if masks is not None:
                masked.append(squares[-1] if masks[i] is None else _sum_sq(v * masks[i]))
        start += count
    zero = params[0].new_zeros(())
    norm = _total(squares).sqrt() if squares else zero
    masked_norm = (_total(masked).sqrt() if masked else zero) if masks is not None else norm
    per_tensor = []  # (scale, eta) of each tensor
    for k, ((count, eps, eta, normalize), rho) in enumerate(zip(spec, rhos)):
        divisor = masked_norm if mask_norm is not None and mask_norm[k] else norm
        per_tensor += [(rho / (divisor + eps) if normalize else rho, eta)] * count
    # last tensor first: the gradients reduced last are the ones still in cache
    for i in reversed(range(len(out))):
        scale, eta = per_tensor[i]
        mask = None if masks is None else masks[i]
        out[i].copy_(params[i] + perturbation(params[i], dirs[i], scale, eta, mask))
    return norm if masks is None else torch.stack([norm, masked_norm])


def dot_into(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    """``sum_i <a_i, b_i>`` (GSAM's and LookSAM's inner product), one fused reduction."""
    return _total([_sum_prod(x, y) for x, y in zip(a, b)])


def pair_stats_into(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    """``[||a||^2, ||b||^2, <a, b>]`` in one pass over both lists."""
    return torch.stack(
        [
            _total([_sum_sq(x) for x in a]),
            _total([_sum_sq(y) for y in b]),
            _total([_sum_prod(x, y) for x, y in zip(a, b)]),
        ]
    )


def gsam_combine_into(
    g_p: Sequence[Tensor], g: Sequence[Tensor], coef: Tensor, alpha: Tensor
) -> None:
    """``g_p <- g_p - alpha * (g - coef * g_p)`` (GSAM's final gradient), in place."""
    for gp, gi in zip(g_p, g):
        gp.copy_(gp - alpha * (gi - coef * gp))


def _gsam_coef(g_p: Sequence[Tensor], g: Sequence[Tensor], eps: float) -> tuple[Tensor, Tensor]:
    """GSAM's ``(cos, coef)``: ``cos = <g, g_p> / (||g|| ||g_p|| + eps)``,
    ``coef = cos * ||g|| / (||g_p|| + eps)``."""
    norm_g = _total([_sum_sq(x) for x in g]).sqrt()
    norm_gp = _total([_sum_sq(y) for y in g_p]).sqrt()
    inner = _total([_sum_prod(x, y) for x, y in zip(g, g_p)])
    cos = inner / (norm_g * norm_gp + eps)
    return cos, cos * norm_g / (norm_gp + eps)


def gsam_fused_into(
    g_p: Sequence[Tensor], g: Sequence[Tensor], alpha: Tensor, eps: float
) -> Tensor:
    """GSAM's whole decomposition in one graph: the statistics of ``g`` and ``g_p``, then
    ``g_p <- g_p - alpha * (g - coef * g_p)``; returns ``cos``."""
    cos, coef = _gsam_coef(g_p, g, eps)
    gsam_combine_into(g_p, g, coef, alpha)
    return cos


def axpy_into(out: Sequence[Tensor], x: Sequence[Tensor], y: Sequence[Tensor], s: Tensor) -> None:
    """``out <- x + s * y`` (``out`` may be ``x``)."""
    for o, xi, yi in zip(out, x, y):
        o.copy_(xi + s * yi)


# ------------------------------------------------------------------------------- base steps
#: one segment (param group) of :func:`sgd_step_`:
#: (count, weight_decay, momentum, dampening, nesterov, maximize)
SGDSpec = tuple[tuple[int, float, float, float, bool, bool], ...]


def _sgd_update(p: Tensor, d: Tensor, buf: Tensor | None, lr: Tensor, seg) -> None:
    """``torch.optim.SGD``'s single-tensor update of ``p`` with gradient ``d``, op for op
    (each ``x.add(y, alpha=a)`` as the single-rounding fma eager CPU computes), so that the
    compiled step is bit-exact with the eager one. ``buf`` exists when momentum != 0."""
    _, weight_decay, momentum, dampening, nesterov, maximize = seg
    if maximize:
        d = -d
    if weight_decay != 0:
        d = _fma(p, weight_decay, d)  # d.add(p, alpha=weight_decay)
    if momentum != 0:
        new_buf = _fma(d, 1 - dampening, buf * momentum)  # buf.mul_(m).add_(d, alpha=1-damp)
        buf.copy_(new_buf)
        d = _fma(new_buf, momentum, d) if nesterov else new_buf
    # -lr rounded to the parameter's dtype first, as eager's alpha (a float64 0-d lr would
    # otherwise promote a 0-d parameter's update to float64)
    p.copy_(_fma(d, (-lr).to(d.dtype), p))  # p.add_(d, alpha=-lr)


def sgd_step_(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    bufs: Sequence[Tensor | None],
    lrs: Sequence[Tensor],
    spec: SGDSpec,
    keep: Sequence[Tensor] | None = None,
) -> None:
    """``torch.optim.SGD.step()`` over segments (param groups) whose momentum buffers exist.

    ``lrs[k]`` is segment ``k``'s learning rate as a 0-d float64 tensor (a scheduler does not
    recompile). ``keep`` (one-step SAM) receives a copy of each gradient in the same pass.
    """
    start = 0
    for seg, lr in zip(spec, lrs):
        for i in range(start, start + seg[0]):
            if keep is not None:
                keep[i].copy_(grads[i])
            _sgd_update(params[i], grads[i], bufs[i], lr, seg)
        start += seg[0]


def _per_tensor(spec: SGDSpec, lrs: Sequence[Tensor]) -> list[tuple[tuple, Tensor]]:
    """``(segment, lr)`` of each tensor, in order (a segment's first entry is its tensor count)."""
    per_tensor = []
    for seg, lr in zip(spec, lrs):
        per_tensor += [(seg, lr)] * seg[0]
    return per_tensor


def gsam_sgd_step_(
    params: Sequence[Tensor],
    g_p: Sequence[Tensor],
    g: Sequence[Tensor],
    bufs: Sequence[Tensor | None],
    lrs: Sequence[Tensor],
    spec: SGDSpec,
    alpha: float,
    eps: float,
) -> Tensor:
    """GSAM's decomposition and SGD's step in one graph (two passes over the gradients):
    ``g_p <- g_p - alpha * (g - coef * g_p)`` as :func:`gsam_fused_into`, then
    :func:`sgd_step_` with ``g_p``; returns ``cos``."""
    cos, coef = _gsam_coef(g_p, g, eps)
    per_tensor = _per_tensor(spec, lrs)
    # last tensor first: the gradients reduced last are the ones still in cache
    for i in reversed(range(len(params))):
        seg, lr = per_tensor[i]
        gp = g_p[i]
        final = gp - alpha * (g[i] - coef * gp)
        gp.copy_(final)
        _sgd_update(params[i], final, bufs[i], lr, seg)
    return cos


def wsam_sgd_step_(
    params: Sequence[Tensor],
    g_p: Sequence[Tensor],
    g: Sequence[Tensor],
    bufs: Sequence[Tensor | None],
    lrs: Sequence[Tensor],
    spec: SGDSpec,
    alpha: float,
    decouple: bool,
) -> None:
    """WSAM's final gradient and SGD's step in one graph (one pass over both gradients), with
    ``alpha = gamma / (1 - gamma)``: coupled, SGD follows ``lerp(g, g_p, alpha)`` (written into
    ``g``; ``g_p`` itself where ``alpha == 1``, SAM); decoupled, SGD follows ``g`` and then
    ``w <- w - lr * alpha * (g_p - g)``."""
    per_tensor = _per_tensor(spec, lrs)
    for i in reversed(range(len(params))):
        seg, lr = per_tensor[i]
        p = params[i]
        if decouple:
            _sgd_update(p, g[i], bufs[i], lr, seg)
            p.copy_(p + (g_p[i] - g[i]) * (-(lr * alpha)).to(p.dtype))
            continue
        if alpha == 1:
            final = g_p[i]
        else:
            final = torch.lerp(g[i], g_p[i], alpha)
            g[i].copy_(final)
        _sgd_update(p, final, bufs[i], lr, seg)


_FUNCTIONS = {
    "norm_sq_into": norm_sq_into,
    "dot_into": dot_into,
    "perturb_into": perturb_into,
    "ascent_into": ascent_into,
    "pair_stats_into": pair_stats_into,
    "gsam_combine_into": gsam_combine_into,
    "gsam_fused_into": gsam_fused_into,
    "axpy_into": axpy_into,
    "sgd_step_": sgd_step_,
    "gsam_sgd_step_": gsam_sgd_step_,
    "wsam_sgd_step_": wsam_sgd_step_,
}


@functools.cache
def compiled(name: str | Callable) -> Callable:
    """The compiled version of one of the functions of this module (by name), or of
    ``name`` itself when it is a function (the graphs of :mod:`kernels.variant_ops`).

    One compiled function per name for the whole process: optimizer instances with equal
    tensor shapes share its graphs. Past ``RECOMPILE_LIMIT`` graphs a call raises
    (``fullgraph=True``), so callers can warn and fall back rather than run eager silently.
    """
    if not compiler_available():
        raise RuntimeError("no C++ compiler found for torch.compile (install g++ or set CXX)")
    import torch._inductor.inductor_prims  # noqa: F401  (registers torch.ops.prims.fma)

    fn = _FUNCTIONS[name] if isinstance(name, str) else name
    return torch.compile(fn, dynamic=False, fullgraph=True, recompile_limit=RECOMPILE_LIMIT)
