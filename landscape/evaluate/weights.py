"""The moved tensors of :mod:`landscape.surface`: a grid point's weights from the centre.

A grid point ``(a, b)`` is the model with its tensors set to ``theta0 + a * dx + b * dy``,
recomputed from the centre ``theta0`` at every point: the moved tensors of one dtype are a flat
centre and flat directions on the device (:class:`_Group`), a point is one fused ``axpy`` into a
preallocated flat buffer and one ``foreach`` copy into the model's tensors, and the centre is
copied back the same way. :class:`_MovedTensors` holds these methods of
:class:`~landscape.surface.SurfaceEvaluator`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from landscape.directions import direction_targets


@dataclass
class _Group:
    """The moved tensors of one dtype as flat centre and direction vectors on the device."""

    names: list[str]
    tensors: list[Tensor]
    shapes: list[torch.Size]
    numels: list[int]
    center: Tensor
    dx: Tensor
    dy: Tensor | None
    buffer: Tensor | None = None  # the flat weights of the current point
    buffer_views: list[Tensor] = field(default_factory=list)  # per-tensor views of buffer
    center_views: list[Tensor] = field(default_factory=list)  # per-tensor views of center

    def views(self, flat: Tensor) -> list[Tensor]:
        """Per-tensor views of ``flat`` (``(P,)`` or ``(K, P)``)."""
        lead = flat.shape[:-1]
        return [
            part.reshape(lead + shape)
            for part, shape in zip(flat.split(self.numels, dim=-1), self.shapes)
        ]


class _MovedTensors:
    """Weights of :class:`~landscape.surface.SurfaceEvaluator` (a base class of it): the moved
    tensors grouped by dtype (``_groups``), a point written into the model, the centre restored.
    """

    def _build_groups(self, directions: Any) -> list[_Group]:
        targets = direction_targets(self.model, self.dir_type)
        sources = [("x", directions.x)] + ([("y", directions.y)] if self.ndim == 2 else [])
        for label, mapping in sources:
            for name, tensor in mapping.items():
                if name not in targets:
                    raise ValueError(
                        f"direction {label} names {name!r}, which is not a "
                        f"{self.dir_type!r} tensor of the model (directions from another "
                        "architecture, or the wrong dir_type?)"
                    )
                if tuple(tensor.shape) != tuple(targets[name].shape):
                    raise ValueError(
                        f"direction {label}[{name!r}] has shape {tuple(tensor.shape)}, the "
                        f"model's tensor {tuple(targets[name].shape)}"
                    )
        by_dtype: dict[torch.dtype, dict[str, list]] = {}
        for name, target in targets.items():
            dx = directions.x.get(name)
            dy = directions.y.get(name) if self.ndim == 2 else None
            moved = (dx is not None and bool(torch.any(dx != 0))) or (
                dy is not None and bool(torch.any(dy != 0))
            )
            if not moved:
                continue
            group = by_dtype.setdefault(
                target.dtype, {"names": [], "tensors": [], "dx": [], "dy": []}
            )
            group["names"].append(name)
            group["tensors"].append(target)
            zeros = torch.zeros(target.shape)
            group["dx"].append(zeros if dx is None else dx)
            group["dy"].append(zeros if dy is None else dy)
        if not by_dtype:
            warnings.warn("every direction is zero: the surface is flat", stacklevel=3)
        groups = []
        for dtype, group in by_dtype.items():

            def flat(parts: list[Tensor], dtype: torch.dtype = dtype) -> Tensor:
                return torch.cat(
                    [p.detach().reshape(-1).to(device=self.device, dtype=dtype) for p in parts]
                )

            tensors = group["tensors"]
            new = _Group(
                names=group["names"],
                tensors=tensors,
                shapes=[t.shape for t in tensors],
                numels=[t.numel() for t in tensors],
                center=flat(tensors).clone(),
                dx=flat(group["dx"]),
                dy=flat(group["dy"]) if self.ndim == 2 else None,
            )
            new.buffer = torch.empty_like(new.center)
            new.buffer_views = new.views(new.buffer)
            new.center_views = new.views(new.center)
            groups.append(new)
        return groups

    def _set_point(self, coord: np.ndarray) -> None:
        # theta = theta0 + a dx (+ b dy) into a preallocated flat buffer, then one foreach
        # copy into the model's tensors: three tensor calls per dtype group, no allocation.
        a = float(coord[0])
        b = float(coord[1]) if self.ndim == 2 else 0.0
        for group in self._groups:
            torch.add(group.center, group.dx, alpha=a, out=group.buffer)
            if group.dy is not None:
                group.buffer.add_(group.dy, alpha=b)
            torch._foreach_copy_(group.tensors, group.buffer_views)

    def _restore(self) -> None:
        for group in self._groups:
            torch._foreach_copy_(group.tensors, group.center_views)
