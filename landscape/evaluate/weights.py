"""The model at grid points: :class:`MovedWeights` sets a point and restores the centre.

A grid point ``(a, b)`` is the model with its tensors set to ``theta0 + a * dx + b * dy``,
recomputed from the centre ``theta0`` at every point: the moved tensors of one dtype are a flat
centre and flat directions on the device (:class:`Group`), a point is one fused ``axpy`` into a
preallocated flat buffer and one ``foreach`` copy into the model's tensors (then, with
``bn_mode="recompute"``, the BatchNorm statistics re-estimated), and the centre is copied back
the same way. Every evaluation runs inside :meth:`MovedWeights.prepared`, which puts the model
in eval mode and on exit writes the centre back (bitwise), restores the BatchNorm buffers and
every module's training flag, whatever happened.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape.directions import direction_targets

#: BatchNorm layers of every dimension (torch's common base class)
BATCHNORM = nn.modules.batchnorm._BatchNorm


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU without any)."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating tensor (torch's default without any)."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.get_default_dtype()


@dataclass
class Group:
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


class Prepared:
    """Context: ``model`` in eval mode; on exit ``restore()`` runs (the centre written back),
    the saved ``buffers`` are copied back and every module's training flag is restored,
    whatever happened."""

    def __init__(
        self,
        model: nn.Module,
        restore: Callable[[], None] | None = None,
        buffers: Sequence[Tensor] = (),
    ) -> None:
        self.model = model
        self.restore = restore
        self.watched = list(buffers)

    def __enter__(self) -> Prepared:
        self.flags = [(m, m.training) for m in self.model.modules()]
        self.buffers = [(buffer, buffer.detach().clone()) for buffer in self.watched]
        self.model.eval()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        with torch.no_grad():
            if self.restore is not None:
                self.restore()
            for buffer, saved in self.buffers:
                buffer.copy_(saved)
        for module, flag in self.flags:
            module.training = flag


class MovedWeights:
    """The tensors of ``model`` that ``directions`` move (``x``, and ``y`` when ``ndim`` is 2),
    grouped by dtype on ``device``; tensors whose directions are zero are not touched.

    ``recompute``: the nominal batches of training inputs over which the BatchNorm running
    statistics are re-estimated at every point (``bn_mode="recompute"``), or None.
    """

    def __init__(
        self,
        model: nn.Module,
        directions: Any,
        ndim: int,
        device: torch.device,
        recompute: Sequence[Tensor] | None = None,
    ) -> None:
        self.model = model
        self.ndim = ndim
        self.device = device
        self.groups = self._build_groups(directions)
        self.batchnorms = [
            m for m in model.modules() if isinstance(m, BATCHNORM) and m.track_running_stats
        ]
        self.recompute = recompute
        self.storages = {
            t.untyped_storage().data_ptr()
            for t in itertools.chain(model.parameters(), model.buffers())
        }

    def _build_groups(self, directions: Any) -> list[Group]:
        dir_type = directions.dir_type
        targets = direction_targets(self.model, dir_type)
        sources = [("x", directions.x)] + ([("y", directions.y)] if self.ndim == 2 else [])
        for label, mapping in sources:
            for name, tensor in mapping.items():
                if name not in targets:
                    raise ValueError(
                        f"direction {label} names {name!r}, which is not a "
                        f"{dir_type!r} tensor of the model (directions from another "
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
            warnings.warn("every direction is zero: the surface is flat", stacklevel=4)
        groups = []
        for dtype, group in by_dtype.items():

            def flat(parts: list[Tensor], dtype: torch.dtype = dtype) -> Tensor:
                return torch.cat(
                    [p.detach().reshape(-1).to(device=self.device, dtype=dtype) for p in parts]
                )

            tensors = group["tensors"]
            new = Group(
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

    @property
    def moved_bytes(self) -> int:
        """Bytes of one set of the moved tensors."""
        return sum(g.center.numel() * g.center.element_size() for g in self.groups)

    def prepared(self) -> Prepared:
        """The context of every evaluation (see :class:`Prepared`): the centre and, with
        ``recompute``, the BatchNorm buffers are restored on exit."""
        buffers = []
        if self.recompute is not None:
            buffers = [b for bn in self.batchnorms for b in bn.buffers(recurse=False)]
        return Prepared(self.model, self.restore, buffers)

    def set_point(self, coord: np.ndarray) -> None:
        """Write ``theta0 + a dx (+ b dy)`` into the model (then re-estimate the BatchNorm
        statistics with ``recompute``)."""
        # theta = theta0 + a dx (+ b dy) into a preallocated flat buffer, then one foreach
        # copy into the model's tensors: three tensor calls per dtype group, no allocation.
        a = float(coord[0])
        b = float(coord[1]) if self.ndim == 2 else 0.0
        for group in self.groups:
            torch.add(group.center, group.dx, alpha=a, out=group.buffer)
            if group.dy is not None:
                group.buffer.add_(group.dy, alpha=b)
            torch._foreach_copy_(group.tensors, group.buffer_views)
        if self.recompute is not None and self.batchnorms:
            self._recompute_batchnorm()

    def _recompute_batchnorm(self) -> None:
        momenta = [bn.momentum for bn in self.batchnorms]
        for bn in self.batchnorms:
            bn.reset_running_stats()
            bn.momentum = None
            bn.train()
        try:
            for inputs in self.recompute:
                self.model(inputs)
        finally:
            for bn, momentum in zip(self.batchnorms, momenta):
                bn.momentum = momentum
                bn.eval()

    def restore(self) -> None:
        """Write the centre back into the model (bitwise)."""
        for group in self.groups:
            torch._foreach_copy_(group.tensors, group.center_views)

    def stacked(self, coords: np.ndarray) -> dict[str, Tensor]:
        """The moved tensors at the K points ``coords`` ``(K, ndim)``: name -> ``(K, ...)``."""
        stacked: dict[str, Tensor] = {}
        for group in self.groups:
            a = torch.as_tensor(coords[:, 0], dtype=group.center.dtype, device=self.device)
            flat = group.center + group.dx * a[:, None]
            if group.dy is not None:
                b = torch.as_tensor(coords[:, 1], dtype=group.center.dtype, device=self.device)
                flat = flat + group.dy * b[:, None]
            stacked.update(zip(group.names, group.views(flat)))
        return stacked

    def unaliased(self, value: Any) -> Any:
        """``value`` (model outputs, possibly nested) with every tensor that shares the storage
        of one of the model's tensors replaced by a copy (the next point overwrites those)."""
        if isinstance(value, Tensor):
            return value.clone() if value.untyped_storage().data_ptr() in self.storages else value
        if isinstance(value, (tuple, list)):
            return type(value)(self.unaliased(item) for item in value)
        if isinstance(value, dict):
            return {key: self.unaliased(item) for key, item in value.items()}
        return value
