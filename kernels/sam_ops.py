"""Tensor-list operations of the SAM family, each with a per-tensor reference twin.

Every function takes Python lists of tensors (one entry per parameter that has a gradient)
and an ``impl`` switch: a name, or an optimizer's :class:`~kernels.dispatch.Dispatch` (which
chooses per device and owns the fallback):

* ``"loop"`` — the readable per-tensor reference: one small op per tensor, exactly the maths
  of the docstring.
* ``"foreach"`` — ``torch._foreach_*`` multi-tensor kernels (few launches; the fast path on
  CUDA, as in ``torch/optim/sgd.py``, and the optimizers' CPU default below 2M parameters).
  On CPU its gain over the loop grows with the number of tensors, not with their size: with
  one thread, SAM's, GSAM's and one-step SAM's optimizer work took 0.89-0.93 of the loop's
  time on ResNet-20 (0.27M parameters in 59 tensors) and 0.93-0.96 on a 24k-parameter CNN
  (11 tensors), but 0.97-1.02 on MLPs of 2k and 0.2M parameters (4 and 8 tensors) and
  1.00-1.07 on one of 1.9M (8 tensors) (``benchmarks/optim_step.py --measures C``, medians
  of paired ratios over 30 interleaved rounds, torch 2.14).
* ``"compiled"`` — the reference loop under ``torch.compile`` (one fused C++/Triton kernel per
  call after a one-time compilation) for the reductions (``global_norm``, ``dot``) and GSAM's
  and LookSAM's combinations; see :mod:`kernels.compiled`. ``copy_``, ``scaled_add_`` and
  ``perturb_`` run their per-tensor loop under ``"compiled"`` (the compiled ascent is
  :func:`kernels.ascent.sam_ascent_`). Where a compiled call cannot run, the loop runs; a
  plain ``"compiled"`` falls back silently, call by call, an optimizer's dispatch warns once.

Scalars that depend on gradients (norms, scales) stay 0-d tensors so that nothing
synchronises a GPU. Norms are computed in the tensors' own dtype (float64 stays float64).
Tensors may live on several devices: per-tensor results are moved to the device of the first
tensor before they are combined (and the compiled calls are skipped).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from kernels.compiled import perturbation
from kernels.dispatch import NOT_RUN, Dispatch, as_dispatch

__all__ = [
    "adaptive_weights",
    "axpy_",
    "gsam_combine_",
    "gsam_decompose_",
    "pair_stats",
    "copy_",
    "dot",
    "global_norm",
    "perturb_",
    "scaled_add_",
]


def _resolve(impl: str | Dispatch, tensors: Sequence[Tensor]) -> tuple[Dispatch, str]:
    """The dispatch of ``impl`` and the implementation it runs on the first tensor's device."""
    dispatch = as_dispatch(impl)
    if len(tensors) == 0:
        return dispatch, "loop"
    return dispatch, dispatch.impl_for(tensors[0].device)


def _run_compiled(dispatch: Dispatch, name: str, *args):
    """The compiled kernel ``name`` through ``dispatch``; ``NOT_RUN`` where it cannot run
    (tensors on several devices, no compiler, an inductor failure): the caller then runs its
    loop, always correct."""
    if len({t.device for t in args[0]}) > 1:
        return NOT_RUN
    return dispatch.run(name, *args)


def _sum_on_first(values: Sequence[Tensor]) -> Tensor:
    device = values[0].device
    return torch.stack([v.to(device) for v in values]).sum()


def adaptive_weights(params: Sequence[Tensor], eta: float) -> list[Tensor]:
    """ASAM's elementwise scale ``T = |w| + eta`` (Kwon et al., ICML 2021), one per tensor."""
    return [p.abs().add_(eta) for p in params]


def global_norm(
    tensors: Sequence[Tensor],
    *,
    params: Sequence[Tensor] | None = None,
    eta: float = 0.0,
    impl: str | Dispatch = "loop",
) -> Tensor:
    """2-norm of the concatenation of ``tensors``: ``sqrt(sum_i ||x_i||^2)``.

    With ``params`` it is ASAM's adaptive norm ``||T x||`` with ``T = |w| + eta``.
    Returns a 0-d tensor on the first tensor's device, in its dtype; an empty list gives 0.
    """
    dispatch, impl = _resolve(impl, tensors)
    if len(tensors) == 0:
        return torch.zeros(())
    if impl == "compiled":
        result = _run_compiled(
            dispatch,
            "norm_sq_into",
            [t for pair in zip(params, tensors) for t in pair]
            if params is not None
            else list(tensors),
            None if params is None else eta,
        )
        if result is not NOT_RUN:
            return result.sqrt()
        impl = "loop"
    if params is not None:
        if impl == "foreach":
            weights = torch._foreach_abs(list(params))
            torch._foreach_add_(weights, eta)
            torch._foreach_mul_(weights, list(tensors))
            tensors = weights
        else:
            tensors = [(p.abs() + eta) * t for p, t in zip(params, tensors)]
    if impl == "foreach":
        norms = torch._foreach_norm(list(tensors))
    else:
        norms = [torch.linalg.vector_norm(t) for t in tensors]
    device = norms[0].device
    return torch.linalg.vector_norm(torch.stack([n.to(device) for n in norms]))


def dot(a: Sequence[Tensor], b: Sequence[Tensor], *, impl: str | Dispatch = "loop") -> Tensor:
    """Inner product ``sum_i <a_i, b_i>`` of two tensor lists (0-d tensor, first device)."""
    dispatch, impl = _resolve(impl, a)
    if len(a) == 0:
        return torch.zeros(())
    if impl == "compiled":
        result = _run_compiled(dispatch, "dot_into", list(a), list(b))
        if result is not NOT_RUN:
            return result
    if impl == "foreach":
        products = torch._foreach_mul(list(a), list(b))
        return _sum_on_first([p.sum() for p in products])
    return _sum_on_first([torch.sum(x * y) for x, y in zip(a, b)])


def copy_(dst: Sequence[Tensor], src: Sequence[Tensor], *, impl: str | Dispatch = "loop") -> None:
    """``dst_i <- src_i`` (bit-exact copy; used to back up and restore weights)."""
    _, impl = _resolve(impl, dst)
    if len(dst) == 0:
        return
    if impl == "foreach":
        torch._foreach_copy_(list(dst), list(src))
    else:
        for d, s in zip(dst, src):
            d.copy_(s)


def scaled_add_(
    y: Sequence[Tensor], x: Sequence[Tensor], scale: Tensor, *, impl: str | Dispatch = "loop"
) -> None:
    """``y_i <- y_i + scale * x_i`` with a 0-d tensor ``scale`` (no host synchronisation)."""
    _, impl = _resolve(impl, y)
    if len(y) == 0:
        return
    if impl == "foreach":
        torch._foreach_add_(list(y), torch._foreach_mul(list(x), scale.to(y[0].device)))
    else:
        for yi, xi in zip(y, x):
            yi.add_(xi * scale.to(yi.device))


def perturb_(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    backups: Sequence[Tensor],
    scale: Tensor,
    *,
    adaptive: bool = False,
    eta: float = 0.0,
    impl: str | Dispatch = "loop",
) -> None:
    """Back up ``w`` and move it to ``w + e``.

    ``e_i = scale * g_i`` (SAM) or ``e_i = scale * T_i^2 * g_i`` with ``T_i = |w_i| + eta``
    (ASAM), where ``scale = rho / (||g|| + eps)`` or ``rho / (||T g|| + eps)`` is a 0-d tensor.
    ``backups`` receive an exact copy of ``params`` first, so restoring is a copy, not a
    subtraction (``(w + e) - e != w`` in floating point). The rule per tensor is
    :func:`kernels.compiled.perturbation`, which the compiled ascent and the pure form share.
    """
    _, impl = _resolve(impl, params)
    if len(params) == 0:
        return
    copy_(backups, params, impl=impl)
    if impl == "foreach":
        grads = list(grads)
        if adaptive:
            weights = torch._foreach_abs(list(params))
            torch._foreach_add_(weights, eta)
            torch._foreach_mul_(weights, weights)
            torch._foreach_mul_(weights, grads)
            grads = weights
        scaled_add_(params, grads, scale, impl="foreach")
        return
    for p, g in zip(params, grads):
        p.add_(perturbation(p, g, scale.to(p.device), eta if adaptive else None))


def pair_stats(
    a: Sequence[Tensor], b: Sequence[Tensor], *, impl: str | Dispatch = "loop"
) -> tuple[Tensor, Tensor, Tensor]:
    """``(||a||, ||b||, <a, b>)`` of two tensor lists (GSAM's and LookSAM's decomposition).

    The loop computes the three reductions separately; ``"compiled"`` fuses them into one pass.
    """
    dispatch, impl = _resolve(impl, a)
    if impl == "compiled":
        stats = _run_compiled(dispatch, "pair_stats_into", list(a), list(b))
        if stats is not NOT_RUN:
            return stats[0].sqrt(), stats[1].sqrt(), stats[2]
        impl = "loop"
    return global_norm(a, impl=impl), global_norm(b, impl=impl), dot(a, b, impl=impl)


def gsam_combine_(
    g_p: Sequence[Tensor],
    g: Sequence[Tensor],
    coef: Tensor,
    alpha: float,
    *,
    impl: str | Dispatch = "loop",
) -> None:
    """GSAM's final gradient in place: ``g_p <- g_p - alpha * (g - coef * g_p)``.

    ``g - coef * g_p`` is the component of the clean gradient ``g`` orthogonal to ``g_p``
    (with ``coef = <g, g_p> / ||g_p||^2`` up to the eps placements of the caller).
    """
    dispatch, impl = _resolve(impl, g_p)
    if len(g_p) == 0:
        return
    if impl == "compiled":
        alpha_t = torch.tensor(alpha, dtype=coef.dtype, device=coef.device)
        done = _run_compiled(dispatch, "gsam_combine_into", list(g_p), list(g), coef, alpha_t)
        if done is not NOT_RUN:
            return
    if impl == "foreach":
        g_perp = torch._foreach_mul(list(g_p), coef.to(g_p[0].device))
        torch._foreach_neg_(g_perp)
        torch._foreach_add_(g_perp, list(g))
        torch._foreach_add_(list(g_p), g_perp, alpha=-alpha)
        return
    for gp, gi in zip(g_p, g):
        g_perp = gi - coef.to(gp.device) * gp
        gp.sub_(g_perp, alpha=alpha)


def axpy_(
    out: Sequence[Tensor],
    x: Sequence[Tensor],
    y: Sequence[Tensor],
    s: Tensor,
    *,
    impl: str | Dispatch = "loop",
) -> None:
    """``out_i <- x_i + s * y_i`` with a 0-d tensor ``s`` (``out`` may be ``x``)."""
    dispatch, impl = _resolve(impl, out)
    if len(out) == 0:
        return
    if impl == "compiled":
        done = _run_compiled(dispatch, "axpy_into", list(out), list(x), list(y), s)
        if done is not NOT_RUN:
            return
    if impl == "foreach":
        result = torch._foreach_add(list(x), torch._foreach_mul(list(y), s.to(x[0].device)))
        torch._foreach_copy_(list(out), result)
        return
    for o, xi, yi in zip(out, x, y):
        o.copy_(xi + s.to(xi.device) * yi)


def gsam_decompose_(
    g_p: Sequence[Tensor],
    g: Sequence[Tensor],
    alpha: float,
    eps: float,
    *,
    impl: str | Dispatch = "loop",
) -> Tensor:
    """GSAM's final gradient in place, statistics included; returns ``cos(g, g_p)``.

    ``cos = <g, g_p> / (||g|| ||g_p|| + eps)``, ``coef = cos * ||g|| / (||g_p|| + eps)``,
    ``g_p <- g_p - alpha * (g - coef * g_p)``. ``"compiled"`` runs it as one graph.
    """
    dispatch, impl = _resolve(impl, g_p)
    if impl == "compiled":
        ref = g_p[0]
        alpha_t = torch.tensor(alpha, dtype=ref.dtype, device=ref.device)
        cos = _run_compiled(dispatch, "gsam_fused_into", list(g_p), list(g), alpha_t, eps)
        if cos is not NOT_RUN:
            return cos
        impl = "loop"
    norm_g, norm_gp, inner = pair_stats(g, g_p, impl=impl)
    cos = inner / (norm_g * norm_gp + eps)
    coef = cos * norm_g / (norm_gp + eps)
    if alpha != 0:
        gsam_combine_(g_p, g, coef, alpha, impl=impl)
    return cos
