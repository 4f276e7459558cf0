"""SAM's ascent ``w -> w + e`` as one functional, with the dispatch inside.

Over segments (one per param group: its weights, their directions, its own ``rho``, ``eps``
and ASAM ``eta``) under one global norm ``n = ||d||`` over all segments (``||T d||`` on ASAM
segments, ``T = |w| + eta``), each segment moves by

    e = rho / (n + eps) * d              (SAM; Foret et al., 2021)
    e = rho / (n + eps) * T^2 * d        (ASAM; Kwon et al., 2021)

It has two forms, as ``torch.add`` / ``Tensor.add_``:

* :func:`sam_ascent_`, in place, the optimizers' form. The dispatch chooses as
  ``torch.optim.sgd()`` chooses between ``_single_tensor_sgd``, ``_multi_tensor_sgd`` and
  ``_fused_sgd``: where every tensor runs ``"compiled"`` on one device in one dtype, the whole
  ascent is one compiled call (:func:`kernels.compiled.ascent_into`) writing ``w + e`` into
  the caller's buffers, whose storages are then swapped with ``p.data`` (restoring ``w`` is a
  swap back, never a subtraction); otherwise segment by segment: the norm of each
  (:func:`kernels.global_norm`), then ``w`` backed up into the buffers and moved in place
  (:func:`kernels.perturb_`: the per-tensor loop, the reference, or ``torch._foreach_*``), or,
  on a device that runs ``"compiled"``, written into the buffers and swapped in. A failed
  compiled call goes to the dispatch's one fallback (:mod:`kernels.dispatch`) and the loop runs.
  :func:`restore_` undoes it exactly.
* :func:`sam_ascent`, pure: returns ``w + e`` and the norms (:class:`Shifted`) and changes
  nothing, written to be traced inside a larger graph (``samlab.train.FusedStep`` compiles a
  whole training step).

The forms agree up to rounding (the norms are summed in other orders); each path is
deterministic. The rule per tensor is :func:`kernels.compiled.perturbation` in every form.

Sparse SAM (Mi et al., NeurIPS 2022) goes through the same functional: a segment's ``mask``
holds one boolean tensor (or None: dense) per weight, and only the entries where it is True
move, ``e = rho / (n + eps) * m * d``. ``n`` is the norm of the unmasked directions (the
seed's rule: the radius actually reached is ``rho * ||m d|| / ||d||``), or with
``mask_norm=True`` the norm ``||m d||`` over all segments (the radius is ``rho``). Both norms
are returned (:attr:`Ascent.masked_norm`, :attr:`Shifted.masked_norm`). The compiled form
multiplies by the mask inside its one graph; the eager forms move along ``m * d`` (exact:
``e * 1 == e``), so an all-True mask is SAM bit for bit on every path.

A segment with ``normalize=False`` moves by ``e = rho * d`` (``rho * T^2 * d`` with ``eta``,
times its mask): no division by the global norm, and its directions do not enter it. bSAM
(Möllenhoff & Khan, ICLR 2023) moves this way twice per step: to a posterior sample
``w + sigma * z`` and to ``w + rho * g / s``; restoring is the same exact swap or copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from kernels.compiled import perturbation
from kernels.dispatch import NOT_RUN, Dispatch, as_dispatch
from kernels.sam_ops import copy_, global_norm, perturb_

__all__ = [
    "Ascent",
    "Segment",
    "Shifted",
    "perturbation_norm",
    "restore_",
    "sam_ascent",
    "sam_ascent_",
    "swap_in",
]


class Segment(NamedTuple):
    """One param group's share of the ascent.

    Attributes:
        params: the weights ``w``.
        directions: ``d``, one per weight, shaped like it (the gradients; one-step SAM's
            gradients of the previous step).
        rho: the radius: a number, or a 0-d tensor (the pure form traced with ``rho`` as an
            input, so that a schedule does not recompile).
        eps: added to the global norm (``perturb_eps``), a number or a 0-d tensor.
        eta: ASAM's offset in ``T = |w| + eta``; None for SAM.
        mask: sparse SAM's masks: one tensor shaped like its weight, boolean or 0/1 in the
            weight's dtype (1 where it moves; the faster form on the compiled CPU path, whose
            generated code does not vectorize bool loads), or None (it moves everywhere), per
            weight; None for the segment: dense.
        mask_norm: divide by the global norm of the masked directions ``||m d||`` instead of
            ``||d||`` (the perturbation's radius is then ``rho``).
        normalize: False: ``e = rho * d`` (no division by the global norm, which then leaves
            this segment's directions out; ``eps`` unused): bSAM's noise and ascent.
    """

    params: Sequence[Tensor]
    directions: Sequence[Tensor]
    rho: float | Tensor
    eps: float | Tensor
    eta: float | None = None
    mask: Sequence[Tensor | None] | None = None
    mask_norm: bool = False
    normalize: bool = True


class Ascent(NamedTuple):
    """What :func:`sam_ascent_` did, enough to undo it.

    Attributes:
        norm: the global norm ``n`` (0-d, the first weight's device and dtype).
        params: the weights moved, in segment order.
        held: per weight, the tensor that holds ``w`` now: its own storage, swapped out of
            ``p.data`` (``swapped``), or the buffer it was copied into.
        swapped: per weight, True where ``p.data`` is a buffer holding ``w + e``.
        masked_norm: ``||m d||`` over all segments where any segment has a mask, else None.
    """

    norm: Tensor
    params: list[Tensor]
    held: list[Tensor]
    swapped: list[bool]
    masked_norm: Tensor | None = None


def _checked(segments: Sequence[Segment]) -> list[Segment]:
    """The segments that have weights; a mask list must have one entry per weight."""
    for segment in segments:
        if segment.mask is not None and len(segment.mask) != len(segment.params):
            raise ValueError(
                f"Segment.mask has {len(segment.mask)} entries for {len(segment.params)} "
                "weights; give one boolean tensor (or None) per weight"
            )
    return [segment for segment in segments if len(segment.params)]


def _masks(segment: Segment) -> Sequence[Tensor | None]:
    return segment.mask if segment.mask is not None else [None] * len(segment.params)


def _masked(segment: Segment) -> Segment:
    """The segment moving along ``m * d`` (dense afterwards), for the eager forms."""
    if segment.mask is None:
        return segment
    dirs = [d if m is None else d * m for d, m in zip(segment.directions, segment.mask)]
    return Segment(
        segment.params,
        dirs,
        segment.rho,
        segment.eps,
        segment.eta,
        None,
        segment.mask_norm,
        segment.normalize,
    )


class Shifted(NamedTuple):
    """What :func:`sam_ascent` returns.

    Attributes:
        points: ``w + e`` for every weight, in segment order.
        norm: the global norm ``n`` of the directions (0-d).
        masked_norm: ``||m d||`` over all segments where any segment has a mask, else None
            (sparse SAM's radius reached is ``rho * masked_norm / (norm + eps)``).
    """

    points: list[Tensor]
    norm: Tensor
    masked_norm: Tensor | None = None


def _scale(segment: Segment, norm: Tensor, masked_norm: Tensor | None):
    """``rho / (n + eps)`` (``n`` the masked norm where the segment asks for it), or ``rho``
    where the segment does not normalize."""
    if not segment.normalize:
        return segment.rho
    by_mask = segment.mask_norm and masked_norm is not None
    return segment.rho / ((masked_norm if by_mask else norm) + segment.eps)


def sam_ascent(segments: Sequence[Segment]) -> Shifted:
    """The pure form: ``Shifted([w + e for every weight], n, ||m d||)``; the weights are not
    changed.

    The norm is ``sqrt(sum of (v * v).sum())`` over the tensors in segment order (``v = d``,
    or ``T d`` on ASAM segments; segments that normalize), the points
    ``w + perturbation(w, d, scale, eta)`` with ``scale = rho / (n + eps)`` (``rho`` where
    ``normalize`` is False). Needs at least one weight.
    """
    segments = _checked(segments)
    squares, masked = [], []
    for segment in segments:
        if not segment.normalize:
            continue
        for w, d, m in zip(segment.params, segment.directions, _masks(segment), strict=True):
            v = d if segment.eta is None else (w.abs() + segment.eta) * d
            squares.append((v * v).sum())
            masked.append(squares[-1] if m is None else ((v * m) ** 2).sum())
    first = segments[0].params[0]
    norm = torch.sqrt(sum(squares)) if squares else first.new_zeros(())
    sparse = any(s.mask is not None for s in segments)
    masked_norm = (torch.sqrt(sum(masked)) if masked else norm) if sparse else norm
    points = []
    for segment in segments:
        scale = _scale(segment, norm, masked_norm)
        points += [
            w + perturbation(w, d, scale, segment.eta, m)
            for w, d, m in zip(segment.params, segment.directions, _masks(segment), strict=True)
        ]
    return Shifted(points, norm, masked_norm if sparse else None)


def sam_ascent_(
    segments: Sequence[Segment],
    buffers: Sequence[Tensor],
    *,
    impl: str | Dispatch = "loop",
) -> Ascent:
    """The in-place form: every weight moves to ``w + e``; returns the :class:`Ascent`.

    ``buffers`` are the caller's, one per weight of the segments that have weights (in
    order), shaped and laid out like it and kept across steps: each ends up holding ``w`` (a
    backup) or ``w + e`` (swapped in as ``p.data``; ``held`` is then the weight's own
    storage). ``impl`` is a name of :data:`kernels.IMPLS` or a :class:`~kernels.Dispatch`.
    """
    dispatch = as_dispatch(impl)
    segments = _checked(segments)
    params = [p for segment in segments for p in segment.params]
    buffers = list(buffers)
    if not params:
        return Ascent(torch.zeros(()), [], [], [])
    dirs = [d for segment in segments for d in segment.directions]
    sparse = any(s.mask is not None for s in segments)
    layout = dispatch.compiled_layout(params, dirs)
    if layout is not None:  # the whole ascent in one compiled call
        device, dtype = layout
        spec = tuple(
            (
                len(s.params),
                float(s.eps),
                None if s.eta is None else float(s.eta),
                bool(s.normalize),
            )
            for s in segments
        )
        rhos = [torch.tensor(float(s.rho), dtype=dtype, device=device) for s in segments]
        extra = ()
        if sparse:
            masks = [m for s in segments for m in _masks(s)]
            extra = (masks, tuple(bool(s.mask_norm) for s in segments))
        norm = dispatch.run("ascent_into", buffers, params, dirs, rhos, spec, *extra)
        if norm is not NOT_RUN:
            held = _swap_in(params, buffers)
            if sparse:
                return Ascent(norm[0], params, held, [True] * len(params), norm[1])
            return Ascent(norm, params, held, [True] * len(params))
    norm = _global_norm(segments, dispatch)
    masked_norm = None
    if sparse:
        segments = [_masked(s) for s in segments]
        masked_norm = _global_norm(segments, dispatch)
    held, swapped, start = [], [], 0
    for segment in segments:
        ps, ds = list(segment.params), list(segment.directions)
        bufs = buffers[start : start + len(ps)]
        start += len(ps)
        scale = _scale(segment, norm, masked_norm)
        if not segment.normalize:
            scale = torch.as_tensor(scale, dtype=ps[0].dtype, device=ps[0].device)
        if dispatch.impl_for(ps[0].device) == "compiled":
            if dispatch.run("perturb_into", bufs, ps, ds, scale, segment.eta) is not NOT_RUN:
                held += _swap_in(ps, bufs)
                swapped += [True] * len(ps)
                continue
        adaptive = segment.eta is not None
        eta = segment.eta if adaptive else 0.0
        perturb_(ps, ds, bufs, scale, adaptive=adaptive, eta=eta, impl=dispatch)
        held += bufs
        swapped += [False] * len(ps)
    return Ascent(norm, params, held, swapped, masked_norm)


def _global_norm(segments: list[Segment], dispatch: Dispatch) -> Tensor:
    """``n`` over the segments that normalize: each segment's norm, then the norm of those
    (0 where none normalizes)."""
    normalized = [s for s in segments if s.normalize]
    if not normalized:
        return segments[0].params[0].new_zeros(())
    segments = normalized
    parts = [
        global_norm(
            s.directions,
            params=None if s.eta is None else s.params,
            eta=0.0 if s.eta is None else s.eta,
            impl=dispatch,
        )
        for s in segments
    ]
    if len(parts) == 1:
        return parts[0]
    return torch.linalg.vector_norm(torch.stack([x.to(parts[0].device) for x in parts]))


def swap_in(params: Sequence[Tensor], points: Sequence[Tensor]) -> Ascent:
    """Make ``points`` the weights: ``p.data <- point`` for each weight, where the caller has
    computed ``w + e`` into ``points`` (buffers shaped and laid out like the weights: bSAM's
    posterior sample, :func:`kernels.bsam_sample_`); :func:`restore_` swaps ``w`` back
    exactly. Returns the :class:`Ascent` (its norm 0: nothing was normalized)."""
    params, points = list(params), list(points)
    if len(params) != len(points):
        raise ValueError(f"swap_in: {len(points)} points for {len(params)} weights")
    for p, x in zip(params, points):
        if x.shape != p.shape or x.dtype != p.dtype or x.device != p.device:
            raise ValueError(
                f"swap_in: a point of shape {tuple(x.shape)}, {x.dtype} on {x.device} for a "
                f"weight of shape {tuple(p.shape)}, {p.dtype} on {p.device}; give buffers "
                "shaped and laid out like the weights"
            )
    if not params:
        return Ascent(torch.zeros(()), [], [], [])
    held = _swap_in(params, points)
    return Ascent(params[0].new_zeros(()), params, held, [True] * len(params))


def _swap_in(params: list[Tensor], buffers: list[Tensor]) -> list[Tensor]:
    """``p.data <- buffer`` (holding ``w + e``) for each weight; returns the storages of ``w``."""
    held = []
    for p, buf in zip(params, buffers):
        held.append(p.data)
        p.data = buf
    return held


def restore_(ascent: Ascent, *, impl: str | Dispatch = "loop") -> None:
    """Put every weight of ``ascent`` back to ``w`` exactly: swap the storage back, or copy
    the backup (the buffer keeps ``w + e`` or ``w`` for the next step)."""
    copied, backups = [], []
    for p, held, swapped in zip(ascent.params, ascent.held, ascent.swapped):
        if swapped:
            p.data = held
        else:
            copied.append(p)
            backups.append(held)
    copy_(copied, backups, impl=impl)


def perturbation_norm(segments: Sequence[Segment], ascent: Ascent) -> Tensor:
    """``||e||`` over all segments (exact for per-segment rho and ASAM), from ``w`` as
    ``ascent`` holds it: call it before :func:`restore_`."""
    held = iter(ascent.held)
    squares = []
    for segment in _checked(segments):
        scale = _scale(segment, ascent.norm, ascent.masked_norm)
        segment = _masked(segment)
        weights = [next(held) for _ in segment.params]
        if segment.eta is None:
            t = segment.directions
        else:
            t = [(w.abs() + segment.eta) ** 2 * d for w, d in zip(weights, segment.directions)]
        squares.append((scale * global_norm(t)) ** 2)
    if not squares:
        return torch.zeros(())
    return torch.stack([s.to(squares[0].device) for s in squares]).sum().sqrt()
