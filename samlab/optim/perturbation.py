"""The perturbation of a SAM-family optimizer: ``w`` to ``w + e`` and back.

A :class:`Perturbation` runs the ascent functional (:func:`kernels.sam_ascent_`) with buffers
it keeps across steps and undoes it (:func:`kernels.restore_`). The buffers are views of one
contiguous block (each view 64-byte aligned) where the weights allow it: the compiled ascent
writes ``w + e`` into them as one stream, which measured about 7% faster than separate
allocations (ViT, CPU), and their storages are swapped with ``p.data``; the loop and foreach
paths back ``w`` up into them. Weights of several dtypes or devices, or not contiguous
(``channels_last``), get a buffer each, laid out like the weight.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

import kernels
from kernels import Ascent, Dispatch, Segment

__all__ = ["Perturbation"]


class Perturbation:
    """``w -> w + e`` and back for one optimizer.

    Args:
        dispatch: the optimizer's :class:`kernels.Dispatch` (implementation and fallback).
    """

    def __init__(self, dispatch: Dispatch) -> None:
        self.dispatch = dispatch
        #: the contiguous block behind the buffers (None while weights need one buffer each)
        self.block: Tensor | None = None
        self._views: tuple[tuple[int, ...], list[Tensor]] | None = None  # (ids, views of block)
        self._own: dict[int, Tensor] = {}  # id(weight) -> its own buffer (keyed by id: cheap)
        self._ascent: Ascent | None = None
        #: ``||m d||`` of the last ascent with sparse SAM's masks (None without masks)
        self.masked_norm: Tensor | None = None

    def ascend(self, segments: Sequence[Segment], *, measure: bool) -> tuple[Tensor, Tensor | None]:
        """Move every weight of ``segments`` to ``w + e``; returns the global norm and, when
        ``measure``, ``||e||`` (else None). Call :meth:`restore` before the next ascent."""
        params = [p for segment in segments for p in segment.params]
        ascent = kernels.sam_ascent_(segments, self.buffers(params), impl=self.dispatch)
        self._ascent = ascent
        self.masked_norm = ascent.masked_norm
        return ascent.norm, kernels.perturbation_norm(segments, ascent) if measure else None

    def swap_in(self, params: list[Tensor], points: list[Tensor]) -> None:
        """Make ``points`` (from :meth:`buffers`, where the caller computed ``w + e``: bSAM's
        posterior sample) the weights; :meth:`restore` swaps ``w`` back exactly. Call
        :meth:`restore` before the next ascent."""
        self._ascent = kernels.swap_in(params, points)
        self.masked_norm = None

    def restore(self) -> None:
        """Put the weights back to ``w`` exactly (nothing when they are not perturbed)."""
        if self._ascent is not None:
            kernels.restore_(self._ascent, impl=self.dispatch)
            self._ascent = None

    def clear(self) -> None:
        """Forget the buffers (the optimizer loaded a state_dict)."""
        self.block = None
        self._views = None
        self._own.clear()

    def buffers(self, params: list[Tensor]) -> list[Tensor]:
        """One buffer per weight, shaped and laid out like it, kept across steps."""
        if not params:
            return []
        first = params[0]
        cached = self._views
        if (
            cached is not None
            and cached[0] == tuple(map(id, params))
            and all(v.shape == p.shape for v, p in zip(cached[1], params))
            and cached[1][0].dtype == first.dtype
            and cached[1][0].device == first.device
        ):
            return cached[1]
        if not all(
            p.is_contiguous() and p.dtype == first.dtype and p.device == first.device
            for p in params
        ):
            return self._own_buffers(params)
        align = max(1, 64 // first.element_size())
        sizes = [-(-p.numel() // align) * align for p in params]
        self.block = torch.empty(sum(sizes), dtype=first.dtype, device=first.device)
        views, offset = [], 0
        for p, size in zip(params, sizes):
            views.append(self.block[offset : offset + p.numel()].view(p.shape))
            offset += size
        self._views = (tuple(map(id, params)), views)
        return views

    def _own_buffers(self, params: list[Tensor]) -> list[Tensor]:
        out = []
        for p in params:
            buf = self._own.get(id(p))
            if buf is None or buf.shape != p.shape or buf.dtype != p.dtype:
                buf = torch.empty_like(p, memory_format=torch.preserve_format)
                self._own[id(p)] = buf
            out.append(buf)
        return out
