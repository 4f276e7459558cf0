"""The computed surface (:class:`Surface`, frozen) and the grid it lives on.

Grid convention (``docs/landscape-design.md``): 1D arrays are ``(nx,)``; 2D arrays are
``(ny, nx)`` with element ``[i, j]`` at ``(x[j], y[i])`` and flat index ``k = i * nx + j``
(what ``np.meshgrid(x, y)`` gives). :func:`grid_coordinates` lists the points in that flat
order; the checks of coordinate axes and of arrays of the grid shape are shared with
:mod:`landscape.io`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def grid_coordinates(x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
    """Coordinates ``(G, ndim)`` of a grid in flat-index order (``k = i * nx + j`` in 2D)."""
    x = np.asarray(x, dtype=np.float64)
    if y is None:
        return x.reshape(-1, 1).copy()
    xx, yy = np.meshgrid(x, np.asarray(y, dtype=np.float64))
    return np.stack([xx.ravel(), yy.ravel()], axis=1)


def grid_shape(x: np.ndarray, y: np.ndarray | None) -> tuple[int, ...]:
    """``(nx,)`` in 1D, ``(ny, nx)`` in 2D."""
    return (x.size,) if y is None else (y.size, x.size)


#: how :func:`grid_axis` reports coordinates that are not a non-empty 1-D array, and ones that
#: are not finite, by default (``name`` and ``shape`` are filled in)
SURFACE_AXIS_ERRORS = (
    "{name} must be a non-empty 1-D array of coordinates, got {shape}",
    "{name} coordinates must be finite",
)


def grid_axis(name: str, values: Any, errors: tuple[str, str] = SURFACE_AXIS_ERRORS) -> np.ndarray:
    """The coordinates ``name`` (``"x"`` or ``"y"``) of a grid as a float64 array, checked:
    ``ValueError`` with one of ``errors`` when they are empty, not 1-D or not finite."""
    array = np.asarray(values, dtype=np.float64)
    not_1d, not_finite = errors
    if array.ndim != 1 or array.size == 0:
        raise ValueError(not_1d.format(name=name, shape=array.shape))
    if not np.all(np.isfinite(array)):
        raise ValueError(not_finite.format(name=name))
    return array


def grid_arrays(
    metrics: Mapping[str, Any], done: Any, shape: tuple[int, ...]
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Metric values as float64 arrays and the ``done`` mask as a bool array, each checked to
    have the grid's ``shape``."""
    arrays = {}
    for name, values in metrics.items():
        array = np.asarray(values, dtype=np.float64)
        if array.shape != shape:
            raise ValueError(f"metric {name!r} has shape {array.shape}, grid is {shape}")
        arrays[name] = array
    done = np.asarray(done, dtype=bool)
    if done.shape != shape:
        raise ValueError(f"done has shape {done.shape}, grid is {shape}")
    return arrays, done


@dataclass(frozen=True)
class Surface:
    """A computed (possibly partial) loss surface.

    ``x`` ``(nx,)`` and ``y`` ``(ny,)`` (None in 1D) are float64 coordinates; every metric
    (``train_loss``, ``train_acc``, ``train_loss_se``, ..., or ``train_mae`` for regression)
    is a float64 array of the grid shape (``(nx,)`` or ``(ny, nx)``, element ``[i, j]`` at
    ``(x[j], y[i])``), NaN where not done; accuracy is a fraction in [0, 1]. ``done`` is a
    bool mask of the grid shape and ``provenance`` a JSON-able dict. ``sample_indices`` maps an
    evaluation set (``"train"``, ``"test"``) to the int64 indices of the samples evaluated
    when a subset of it was used (stored as ``train_indices`` / ``test_indices`` in HDF5);
    empty when every sample was.
    """

    x: np.ndarray
    y: np.ndarray | None
    metrics: dict[str, np.ndarray]
    done: np.ndarray
    provenance: dict[str, Any] = field(default_factory=dict)
    sample_indices: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        x = grid_axis("x", self.x)
        y = None if self.y is None else grid_axis("y", self.y)
        metrics, done = grid_arrays(self.metrics, self.done, grid_shape(x, y))
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "metrics", metrics)
        object.__setattr__(self, "done", done)
        object.__setattr__(self, "provenance", dict(self.provenance))
        indices = {}
        for name, values in dict(self.sample_indices or {}).items():
            array = np.asarray(values)
            if array.ndim != 1 or not (array.size == 0 or np.issubdtype(array.dtype, np.integer)):
                raise ValueError(
                    f"sample_indices[{name!r}] must be a 1-D integer array, got "
                    f"{array.dtype} {array.shape}"
                )
            indices[str(name)] = array.astype(np.int64)
        object.__setattr__(self, "sample_indices", indices)

    @property
    def train_indices(self) -> np.ndarray | None:
        """Indices of the evaluated training samples when a subset was used, else None."""
        return self.sample_indices.get("train")

    @property
    def test_indices(self) -> np.ndarray | None:
        """Indices of the evaluated test samples when a test subset was used, else None."""
        return self.sample_indices.get("test")

    @property
    def shape(self) -> tuple[int, ...]:
        """``(nx,)`` or ``(ny, nx)``."""
        return grid_shape(self.x, self.y)

    @property
    def ndim(self) -> int:
        """1 or 2."""
        return 1 if self.y is None else 2

    def coordinates(self) -> np.ndarray:
        """``(G, ndim)`` coordinates in flat-index order."""
        return grid_coordinates(self.x, self.y)
