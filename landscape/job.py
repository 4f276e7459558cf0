"""One surface computation: its grid, the points still to evaluate and their results.

:class:`SurfaceJob` is what the one-process loop (:mod:`landscape.compute`) and MPI's rank 0
(:mod:`landscape.mpi`) share: the grid (a writer's, or the coordinates given), the checks that
the evaluator fits it, the flat indices not done yet, and the results as they arrive, written
through the writer (and flushed) or kept in memory, then returned as a
:class:`~landscape.grid.Surface`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from landscape.grid import Surface, grid_coordinates, grid_shape

#: points per chunk when neither the caller nor the evaluator says
DEFAULT_CHUNK = 16


def chunk_limit(evaluator: Any, chunk_size: int | None) -> int:
    """The largest chunk of points: ``chunk_size``, else the evaluator's
    ``default_chunk_size`` (or :data:`DEFAULT_CHUNK`); a positive integer."""
    if chunk_size is None:
        chunk_size = int(getattr(evaluator, "default_chunk_size", DEFAULT_CHUNK))
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)):
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    return int(chunk_size)


def points_per_call(evaluator: Any) -> int:
    """Points per evaluation call: K for vmap or compiled K-point calls (a whole call), else
    1."""
    return max(1, int(getattr(evaluator, "points_per_call", 1)))


def points_bar(total: int, progress: bool, **options: Any) -> Any:
    """A tqdm bar counting points of the surface (``options`` go to tqdm)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="point", desc="surface", disable=not progress, **options)


class SurfaceJob:
    """The grid of one computation, the points still to do and the results so far.

    Args:
        evaluator: anything with ``metric_names`` (and optionally ``ndim``, ``provenance``,
            ``sample_indices``).
        writer: a :class:`~landscape.io.SurfaceWriter` (its grid is used and its ``done``
            points are skipped; results are written through it) or ``None`` (results kept in
            memory; then ``x`` (and ``y``) give the grid).
        x, y: grid coordinates; with a writer they must equal its own when given.

    Raises:
        ValueError: no grid, a grid that differs from the writer's, an evaluator of the other
            dimension, or metric names that are not the file's.
    """

    def __init__(self, evaluator: Any, writer: Any, x: Any, y: Any) -> None:
        self.evaluator = evaluator
        self.writer = writer
        self.x, self.y = self._grid(writer, x, y)
        ndim = getattr(evaluator, "ndim", None)
        grid_ndim = 1 if self.y is None else 2
        if ndim is not None and ndim != grid_ndim:
            raise ValueError(f"the evaluator has {ndim}-D directions but the grid is {grid_ndim}-D")
        self.names = tuple(evaluator.metric_names)
        if writer is not None and set(writer.metric_names) != set(self.names):
            raise ValueError(
                f"the surface file holds metrics {sorted(writer.metric_names)}, the evaluator "
                f"computes {sorted(self.names)}"
            )
        self.coords = grid_coordinates(self.x, self.y)
        self.size = len(self.coords)
        self.metrics = {name: np.full(self.size, np.nan) for name in self.names}
        self.done = np.zeros(self.size, dtype=bool)
        if writer is not None:
            self.done[:] = np.asarray(writer.done, dtype=bool).reshape(-1)
        self.todo = np.flatnonzero(~self.done).astype(np.int64)

    @staticmethod
    def _grid(writer: Any, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray | None]:
        if writer is not None:
            wx = np.asarray(writer.x, dtype=np.float64)
            wy = None if writer.y is None else np.asarray(writer.y, dtype=np.float64)
            if x is not None and not np.array_equal(np.asarray(x, dtype=np.float64), wx):
                raise ValueError("x differs from the writer's xcoordinates")
            if y is not None and (wy is None or not np.array_equal(np.asarray(y, np.float64), wy)):
                raise ValueError("y differs from the writer's ycoordinates")
            return wx, wy
        if x is None:
            raise ValueError("compute_surface needs a writer or the grid coordinates x (and y)")
        return np.asarray(x, dtype=np.float64), None if y is None else np.asarray(y, np.float64)

    def progress_bar(self, progress: bool) -> Any:
        """A tqdm bar over the whole grid that starts at the points done before."""
        initial = self.size - len(self.todo)
        return points_bar(self.size, progress, initial=initial, dynamic_ncols=True, smoothing=0.1)

    def put(self, indices: np.ndarray, values: Mapping[str, np.ndarray]) -> None:
        """Store the values of the points ``indices`` (through the writer when there is one)."""
        values = {name: np.asarray(values[name], dtype=np.float64) for name in self.names}
        if self.writer is not None:
            self.writer.write(indices, values)
        for name, array in values.items():
            self.metrics[name][indices] = array
        self.done[indices] = True

    def surface(self, extra: Mapping[str, Any]) -> Surface:
        """The result: the file's contents and provenance (or the evaluator's), plus ``extra``."""
        if self.writer is not None:
            surface = self.writer.surface()
            return replace(surface, provenance={**surface.provenance, **extra})
        provenance = getattr(self.evaluator, "provenance", None)
        provenance = dict(provenance) if isinstance(provenance, Mapping) else {}
        shape = grid_shape(self.x, self.y)
        return Surface(
            x=self.x,
            y=self.y,
            metrics={name: array.reshape(shape) for name, array in self.metrics.items()},
            done=self.done.reshape(shape),
            provenance={**provenance, **extra},
            sample_indices=dict(getattr(self.evaluator, "sample_indices", None) or {}),
        )
