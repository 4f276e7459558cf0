"""The value and the shared helpers of :mod:`landscape.directions`.

:class:`Directions` (one or two directions by tensor name), :func:`direction_targets` (the
tensors a direction moves), validation of ``dir_type`` / norm / ignore names, state_dicts from
modules, checkpoint dicts or paths, and inner products of name -> tensor dicts as flat vectors
(cosine, Gram-Schmidt, filter normalisation).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

DIR_TYPES = ("weights", "states")
NORMS = ("filter", "layer", "weight", "dfilter", "dlayer", "none")
IGNORES = ("biasbn", "none")
KINDS = ("random", "interpolation", "plane", "pca", "file")
_EPS = 1e-10


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
        if self.dir_type not in DIR_TYPES:
            raise ValueError(f"dir_type must be one of {DIR_TYPES}, got {self.dir_type!r}")
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
# Helpers
# --------------------------------------------------------------------------------------------


def _check_dir_type(dir_type: str) -> str:
    if dir_type not in DIR_TYPES:
        raise ValueError(f"dir_type must be one of {DIR_TYPES}, got {dir_type!r}")
    return dir_type


def _canonical_norm(norm: str | None) -> str:
    norm = "none" if norm in (None, "") else str(norm).lower()
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS} (or ''), got {norm!r}")
    return norm


def _canonical_ignore(ignore: str | None) -> str:
    ignore = "none" if ignore in (None, "") else str(ignore).lower()
    if ignore not in IGNORES:
        raise ValueError(f"ignore must be one of {IGNORES} (or ''), got {ignore!r}")
    return ignore


def _cpu32(t: Tensor) -> Tensor:
    """A float32 CPU view or copy of ``t`` (never modify the result in place)."""
    return t.detach().to(device="cpu", dtype=torch.float32)


def _same_storage_key(t: Tensor) -> tuple[Any, ...] | None:
    try:
        ptr = t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):  # meta or exotic tensors
        return None
    if ptr == 0:
        return None
    return (t.device.type, ptr, t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)


def _as_state(obj: Any, what: str) -> Mapping[str, Tensor]:
    """A state_dict from a module, a state_dict, a checkpoint dict or a checkpoint path."""
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if isinstance(obj, (str, os.PathLike)):
        return _load_checkpoint_state(Path(obj))
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                return inner
        return obj
    raise TypeError(
        f"{what} must be an nn.Module, a state_dict, a checkpoint dict with a 'model' entry or "
        f"a checkpoint path, got {type(obj).__name__}"
    )


def _load_checkpoint_state(path: Path) -> Mapping[str, Tensor]:
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt, foreign, or needs unpickling arbitrary objects
        raise ValueError(f"cannot load checkpoint {path} with weights_only=True: {err}") from err
    if isinstance(data, Mapping):
        for key in ("model", "state_dict"):
            inner = data.get(key)
            if isinstance(inner, Mapping):
                return inner
        if all(isinstance(v, Tensor) for v in data.values()):
            return data
    raise ValueError(
        f"{path} is neither a state_dict nor a checkpoint dict with a 'model' (or 'state_dict') "
        "entry"
    )


def _lookup(state: Mapping[str, Any], name: str, shape: torch.Size, what: str) -> Tensor:
    if name not in state:
        raise ValueError(f"{what} has no entry {name!r} (a checkpoint of another architecture?)")
    value = state[name]
    if not isinstance(value, Tensor):
        raise ValueError(f"{what}[{name!r}] is not a tensor")
    if tuple(value.shape) != tuple(shape):
        raise ValueError(
            f"{what}[{name!r}] has shape {tuple(value.shape)}, the model {tuple(shape)} "
            "(a checkpoint of another architecture?)"
        )
    return value


def _difference(targets: Mapping[str, Tensor], other: Any, what: str) -> dict[str, Tensor]:
    """``other - targets``, name by name, as float32 CPU tensors (computed in >= float32)."""
    state = _as_state(other, what)
    out = {}
    for name, w in targets.items():
        w2 = _lookup(state, name, w.shape, what)
        dtype = torch.promote_types(w.dtype, torch.float32)
        w_cpu = w.detach().to(device="cpu", dtype=dtype)
        out[name] = (w2.detach().to(device="cpu", dtype=dtype) - w_cpu).to(torch.float32)
    return out


def _dot(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> float:
    """Inner product of two name -> tensor dicts as flat vectors, in float64."""
    total = 0.0
    for name, t in a.items():
        total += float(torch.dot(t.reshape(-1).double(), b[name].reshape(-1).double()))
    return total


def _cosine(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> float | None:
    na, nb = math.sqrt(_dot(a, a)), math.sqrt(_dot(b, b))
    if na == 0.0 or nb == 0.0:
        return None
    return _dot(a, b) / (na * nb)


def _orthogonalize(x: Mapping[str, Tensor], y: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Gram–Schmidt of ``y`` against ``x`` on the flat vectors, rescaled to ``|y|``."""
    xx, xy, yy = _dot(x, x), _dot(x, y), _dot(y, y)
    if xx == 0.0:
        raise ValueError("cannot orthogonalize against a zero x direction")
    coef = xy / xx
    residual = {n: y[n].double() - coef * x[n].double() for n in y}
    rr = sum(float((r * r).sum()) for r in residual.values())
    if rr <= 1e-24 * max(yy, 1e-300):
        raise ValueError("cannot orthogonalize: y is parallel to x (same_dir?)")
    scale = math.sqrt(yy / rr)
    return {n: (r * scale).to(torch.float32) for n, r in residual.items()}


def _normalize_(d: Tensor, w: Tensor, norm: str) -> None:
    """Normalise one direction tensor ``d`` (ndim >= 2) against weights ``w`` in place."""
    if norm == "filter":
        rows_d = d.reshape(d.shape[0], -1)
        rows_w = w.reshape(w.shape[0], -1)
        scale = rows_w.norm(dim=1) / (rows_d.norm(dim=1) + _EPS)
        rows_d.mul_(scale.unsqueeze(1))
    elif norm == "layer":
        d.mul_(w.norm() / (d.norm() + _EPS))
    elif norm == "weight":
        d.mul_(w)
    elif norm == "dfilter":
        rows_d = d.reshape(d.shape[0], -1)
        rows_d.div_(rows_d.norm(dim=1, keepdim=True) + _EPS)
    elif norm == "dlayer":
        d.div_(d.norm() + _EPS)
    # "none": unchanged


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
    _check_dir_type(dir_type)
    if dir_type == "weights":
        return dict(model.named_parameters())
    targets: dict[str, Tensor] = {}
    seen: set[Any] = set()
    for name, value in model.state_dict(keep_vars=True).items():
        if not isinstance(value, Tensor) or not torch.is_floating_point(value):
            continue
        key = _same_storage_key(value)
        if id(value) in seen or (key is not None and key in seen):
            continue
        seen.add(id(value))
        if key is not None:
            seen.add(key)
        targets[name] = value
    return targets
