"""The value of :mod:`landscape.directions` and the tensors a direction moves.

:class:`Directions` (one or two directions by tensor name), :func:`direction_targets` (the
tensors of a model a direction moves) and the validation of ``dir_type`` / norm / ignore names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

DIR_TYPES = ("weights", "states")
NORMS = ("filter", "layer", "weight", "dfilter", "dlayer", "none")
IGNORES = ("biasbn", "none")
KINDS = ("random", "interpolation", "plane", "pca", "file")


# --------------------------------------------------------------------------------------------
# The value
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Directions:
    """One or two directions in weight space, by tensor name, in the model's order.

    Attributes:
        x: name -> direction tensor (float32, CPU), shaped like the tensor it moves.
        y: the second direction with the same names and shapes, or ``None`` for 1D.
        dir_type: ``"weights"`` (the model's ``named_parameters()``) or ``"states"`` (every
            floating-point ``state_dict()`` entry, BatchNorm running statistics included).
        meta: JSON-able description: ``kind`` ("random" | "interpolation" | "plane" | "pca" |
            "file"), ``seed``, ``xnorm``, ``ynorm``, ``xignore``, ``yignore``,
            ``orthogonalized``, ``cosine`` (``x . y / (|x| |y|)``, before any
            orthogonalisation; ``None`` in 1D) and, for PCA, ``explained_variance_ratio``
            (a list of 2 floats).
    """

    x: dict[str, Tensor]
    y: dict[str, Tensor] | None
    dir_type: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_dir_type(self.dir_type)
        if self.y is not None:
            if list(self.y) != list(self.x):
                raise ValueError(
                    "the y direction must have the same names, in the same order, as x"
                )
            for name, dx in self.x.items():
                if tuple(self.y[name].shape) != tuple(dx.shape):
                    raise ValueError(
                        f"direction shapes differ for {name!r}: x {tuple(dx.shape)}, "
                        f"y {tuple(self.y[name].shape)}"
                    )

    @property
    def ndim(self) -> int:
        """1 for a line, 2 for a plane."""
        return 1 if self.y is None else 2

    def names(self) -> list[str]:
        """The tensor names a direction moves, in model order (the keys of ``x``)."""
        return list(self.x)


# --------------------------------------------------------------------------------------------
# Names of the options
# --------------------------------------------------------------------------------------------


def check_dir_type(dir_type: str) -> str:
    """``dir_type`` if it is one of :data:`DIR_TYPES`, else ``ValueError``."""
    if dir_type not in DIR_TYPES:
        raise ValueError(f"dir_type must be one of {DIR_TYPES}, got {dir_type!r}")
    return dir_type


def canonical_norm(norm: str | None) -> str:
    """A normalisation name in lower case (``None`` and ``""`` mean ``"none"``), checked."""
    norm = "none" if norm in (None, "") else str(norm).lower()
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS} (or ''), got {norm!r}")
    return norm


def canonical_ignore(ignore: str | None) -> str:
    """A rule for 1-D tensors in lower case (``None`` and ``""`` mean ``"none"``), checked."""
    ignore = "none" if ignore in (None, "") else str(ignore).lower()
    if ignore not in IGNORES:
        raise ValueError(f"ignore must be one of {IGNORES} (or ''), got {ignore!r}")
    return ignore


def same_storage_key(t: Tensor) -> tuple[Any, ...] | None:
    """What two views of the same memory share (``None`` where it cannot be told): tied
    tensors have the same key."""
    try:
        ptr = t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):  # meta or exotic tensors
        return None
    if ptr == 0:
        return None
    return (t.device.type, ptr, t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)


# --------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------


def direction_targets(model: nn.Module, dir_type: str = "weights") -> dict[str, Tensor]:
    """The tensors a direction moves, by name, in model order.

    Args:
        model: any ``nn.Module``.
        dir_type: ``"weights"``: ``model.named_parameters()`` (frozen parameters included);
            ``"states"``: every floating-point ``state_dict()`` entry (parameters and
            buffers such as BatchNorm's ``running_mean`` and ``running_var``). Integer
            buffers such as ``num_batches_tracked`` are never moved.

    Returns:
        name -> the live tensor (a ``Parameter`` or buffer of ``model``, not a copy). Tied
        tensors appear once, under their first name.

    .. note::
       loss-landscape's ``states`` mode also perturbs ``num_batches_tracked`` and visits tied
       weights once per name; samlab does neither.
    """
    check_dir_type(dir_type)
    if dir_type == "weights":
        return dict(model.named_parameters())
    targets: dict[str, Tensor] = {}
    seen: set[Any] = set()
    for name, value in model.state_dict(keep_vars=True).items():
        if not isinstance(value, Tensor) or not torch.is_floating_point(value):
            continue
        key = same_storage_key(value)
        if id(value) in seen or (key is not None and key in seen):
            continue
        seen.add(id(value))
        if key is not None:
            seen.add(key)
        targets[name] = value
    return targets
