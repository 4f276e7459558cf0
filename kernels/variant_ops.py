"""Tensor-list operations of WSAM, FriendlySAM and bSAM, each with a per-tensor reference twin.

As in :mod:`kernels.sam_ops`, every function takes lists of tensors (one per parameter that has
a gradient) and an ``impl``: ``"loop"`` (the readable per-tensor reference, exactly the maths of
the docstring), ``"foreach"`` (``torch._foreach_*``) or ``"compiled"`` (the reference graph
function of this module under ``torch.compile``, through the dispatch's one fallback); a
:class:`~kernels.Dispatch` chooses per device. All of them are elementwise: the reductions
(global norms) stay in the ascent functional (:func:`kernels.sam_ascent_`).

* :func:`lerp_`: ``start <- start + weight * (end - start)`` (WSAM's coupled gradient
  ``g + gamma / (1 - gamma) * (g_p - g)``, Yue et al., KDD 2023).
* :func:`ema_direction_`: FriendlySAM's (Li et al., CVPR 2024) EMA of the gradient and the
  direction it perturbs along: ``m <- lam m + (1 - lam) g``, ``g <- g - sigma m``.
* :func:`bsam_sample_`, :func:`bsam_precision_`, :func:`bsam_update_`: bSAM's (Möllenhoff &
  Khan, ICLR 2023) posterior sample ``w + sigma z`` with ``sigma = 1 / sqrt(N s)``, its ascent
  direction ``g / s`` with the precision update ``s <- b2 s + (1 - b2)(sqrt(s) |g| + delta +
  gamma)``, and its mean update ``m <- b1 m + (1 - b1)(g_e + delta w)``, ``w <- w - lr m / s``.

Scalars that change during training (the learning rate) enter the compiled graphs as 0-d
tensors, so a schedule never recompiles.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from kernels.dispatch import NOT_RUN, Dispatch, as_dispatch

__all__ = [
    "bsam_precision_",
    "bsam_sample_",
    "bsam_update_",
    "ema_direction_",
    "lerp_",
]


def _impl(impl: str | Dispatch, tensors: Sequence[Tensor]) -> tuple[Dispatch, str]:
    dispatch = as_dispatch(impl)
    if len(tensors) == 0:
        return dispatch, "loop"
    return dispatch, dispatch.impl_for(tensors[0].device)


def _compiled(dispatch: Dispatch, fn, *args) -> bool:
    """Run graph ``fn`` compiled; False where it cannot (several devices or dtypes, a failed
    compilation: the caller runs its loop)."""
    tensors = [t for a in args if isinstance(a, list) for t in a]
    if len({(t.device, t.dtype) for t in tensors}) > 1:
        return False
    return dispatch.run(fn, *args) is not NOT_RUN


# ------------------------------------------------------------------------------- WSAM
def lerp_graph(start: list[Tensor], end: list[Tensor], weight: float) -> None:
    """The graph of :func:`lerp_` (``torch.lerp`` per tensor)."""
    for s, e in zip(start, end):
        s.copy_(torch.lerp(s, e, weight))


def lerp_(
    start: Sequence[Tensor],
    end: Sequence[Tensor],
    weight: float,
    *,
    impl: str | Dispatch = "loop",
) -> None:
    """``start_i <- start_i + weight * (end_i - start_i)`` (``torch.lerp``; ``weight`` may
    exceed 1: WSAM's ``gamma / (1 - gamma)``)."""
    dispatch, impl = _impl(impl, start)
    if len(start) == 0:
        return
    if impl == "compiled" and _compiled(dispatch, lerp_graph, list(start), list(end), weight):
        return
    if impl == "foreach":
        torch._foreach_lerp_(list(start), list(end), weight)
        return
    for s, e in zip(start, end):
        s.lerp_(e, weight)


# ------------------------------------------------------------------------------- FriendlySAM
def ema_direction_graph(grads: list[Tensor], emas: list[Tensor], lam: float, sigma: float):
    """The graph of :func:`ema_direction_`."""
    for g, m in zip(grads, emas):
        new_m = m * lam + g * (1 - lam)
        m.copy_(new_m)
        g.copy_(g - new_m * sigma)


def ema_direction_(
    grads: Sequence[Tensor],
    emas: Sequence[Tensor],
    lam: float,
    sigma: float,
    *,
    impl: str | Dispatch = "loop",
) -> None:
    """FriendlySAM's direction, in place: ``m_i <- lam m_i + (1 - lam) g_i`` (the EMA that
    estimates the full gradient), then ``g_i <- g_i - sigma m_i`` (the batch-specific part).
    ``sigma = 0`` leaves ``g`` exactly as it was."""
    dispatch, impl = _impl(impl, grads)
    if len(grads) == 0:
        return
    grads, emas = list(grads), list(emas)
    if impl == "compiled" and _compiled(dispatch, ema_direction_graph, grads, emas, lam, sigma):
        return
    if impl == "foreach":
        torch._foreach_mul_(emas, lam)
        torch._foreach_add_(emas, grads, alpha=1 - lam)
        torch._foreach_add_(grads, emas, alpha=-sigma)
        return
    for g, m in zip(grads, emas):
        m.mul_(lam).add_(g, alpha=1 - lam)
        g.add_(m, alpha=-sigma)


# ------------------------------------------------------------------------------- bSAM
def bsam_sample_graph(
    points: list[Tensor], params: list[Tensor], precisions: list[Tensor], num_data: float
) -> None:
    """The graph of :func:`bsam_sample_`."""
    for x, w, s in zip(points, params, precisions):
        x.copy_(w + x / (s * num_data).sqrt())


def bsam_sample_(
    points: Sequence[Tensor],
    params: Sequence[Tensor],
    precisions: Sequence[Tensor],
    num_data: float,
    *,
    impl: str | Dispatch = "loop",
) -> None:
    """A posterior sample of bSAM, in place in ``points``, which hold standard normal ``z``:
    ``x_i <- w_i + z_i / sqrt(N s_i)`` (the posterior ``N(w, 1 / (N s))``, ``N = num_data``).

    One pass over ``z`` where it was drawn (the caller's ascent buffers): ``z`` is scaled and
    ``w`` added in the same buffer, which the caller then swaps in as the weights
    (:func:`kernels.swap_in`), so that removing the noise is a swap back, never a subtraction.
    The loop and foreach are ``w + z / sqrt(N s)`` bit for bit; ``"compiled"`` fuses it into
    one loop, equal to rounding (its generated division may round differently).
    """
    dispatch, impl = _impl(impl, points)
    if len(points) == 0:
        return
    points, params, precisions = list(points), list(params), list(precisions)
    args = (points, params, precisions, num_data)
    if impl == "compiled" and _compiled(dispatch, bsam_sample_graph, *args):
        return
    if impl == "foreach":
        std = torch._foreach_mul(precisions, num_data)
        torch._foreach_sqrt_(std)
        torch._foreach_div_(points, std)
        torch._foreach_add_(points, params)
        return
    for x, w, s in zip(points, params, precisions):
        x.div_((s * num_data).sqrt()).add_(w)


def bsam_precision_graph(
    grads: list[Tensor], precisions: list[Tensor], beta2: float, shift: float
) -> None:
    """The graph of :func:`bsam_precision_` (``shift = delta + gamma``)."""
    for g, s in zip(grads, precisions):
        new_s = s * beta2 + (s.sqrt() * g.abs() + shift) * (1 - beta2)
        g.copy_(g / s)
        s.copy_(new_s)


def bsam_precision_(
    grads: Sequence[Tensor],
    precisions: Sequence[Tensor],
    beta2: float,
    weight_decay: float,
    damping: float,
    *,
    impl: str | Dispatch = "loop",
) -> None:
    """bSAM after the noisy pass, in place, with ``g`` the gradient at the posterior sample:
    ``g_i <- g_i / s_i`` (the ascent direction; ``s`` before this update) and
    ``s_i <- beta2 s_i + (1 - beta2) (sqrt(s_i) |g_i| + delta + gamma)`` with
    ``delta = weight_decay`` and ``gamma = damping``."""
    dispatch, impl = _impl(impl, grads)
    if len(grads) == 0:
        return
    grads, precisions = list(grads), list(precisions)
    shift = weight_decay + damping
    if impl == "compiled" and _compiled(
        dispatch, bsam_precision_graph, grads, precisions, beta2, shift
    ):
        return
    if impl == "foreach":
        target = torch._foreach_sqrt(precisions)
        torch._foreach_mul_(target, torch._foreach_abs(grads))
        torch._foreach_add_(target, shift)
        torch._foreach_div_(grads, precisions)
        torch._foreach_mul_(precisions, beta2)
        torch._foreach_add_(precisions, target, alpha=1 - beta2)
        return
    for g, s in zip(grads, precisions):
        target = s.sqrt().mul_(g.abs()).add_(shift)
        g.div_(s)
        s.mul_(beta2).add_(target, alpha=1 - beta2)


def bsam_update_graph(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    precisions: list[Tensor],
    lr: Tensor,
    beta1: float,
    weight_decay: float,
) -> None:
    """The graph of :func:`bsam_update_` (``lr`` a 0-d tensor)."""
    for w, g, m, s in zip(params, grads, exp_avgs, precisions):
        new_m = m * beta1 + (g + w * weight_decay) * (1 - beta1)
        m.copy_(new_m)
        w.copy_(w - lr.to(w.dtype) * new_m / s)


def bsam_update_(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    exp_avgs: Sequence[Tensor],
    precisions: Sequence[Tensor],
    lr: float,
    beta1: float,
    weight_decay: float,
    *,
    impl: str | Dispatch = "loop",
) -> None:
    """bSAM's mean update in place, with ``g`` the gradient at ``w + e``:
    ``m_i <- beta1 m_i + (1 - beta1)(g_i + delta w_i)``, ``w_i <- w_i - lr m_i / s_i``
    (``delta = weight_decay``; ``s`` already updated by :func:`bsam_precision_`)."""
    dispatch, impl = _impl(impl, params)
    if len(params) == 0:
        return
    params, grads = list(params), list(grads)
    exp_avgs, precisions = list(exp_avgs), list(precisions)
    if impl == "compiled":
        lr_t = torch.tensor(float(lr), dtype=torch.float64, device=params[0].device)
        args = (params, grads, exp_avgs, precisions, lr_t, beta1, weight_decay)
        if _compiled(dispatch, bsam_update_graph, *args):
            return
    if impl == "foreach":
        if weight_decay != 0:
            grads = torch._foreach_add(grads, params, alpha=weight_decay)
        torch._foreach_mul_(exp_avgs, beta1)
        torch._foreach_add_(exp_avgs, grads, alpha=1 - beta1)
        torch._foreach_addcdiv_(params, exp_avgs, precisions, value=-lr)
        return
    for w, g, m, s in zip(params, grads, exp_avgs, precisions):
        if weight_decay != 0:
            g = g.add(w, alpha=weight_decay)
        m.mul_(beta1).add_(g, alpha=1 - beta1)
        w.addcdiv_(m, s, value=-lr)
