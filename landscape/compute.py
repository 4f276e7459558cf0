"""Loss surfaces of any ``nn.Module`` along one or two directions (Li et al., NeurIPS 2018).

A grid point ``(a, b)`` is the model with its tensors set to ``theta0 + a * dx + b * dy``,
**recomputed from the centre** ``theta0`` at every point (never stepped incrementally): one
fused ``axpy`` into a preallocated flat buffer and one ``foreach`` copy into the model's
tensors. The evaluation data are materialised once on the device
(:func:`~landscape.evaluate.as_tensors`); each point is one pass over them in eval mode without
gradients. Loss and accuracy are sample-weighted means over all evaluation samples; their
standard errors come from the means of the nominal batches of ``batch_size``. The grid
convention is :mod:`landscape.grid`'s.

How a point is evaluated (the modes ``eager``, ``compiled``, ``vmap`` and ``auto``, the
forward-chunk probe, what each costs and why values never depend on chunking or on the process
that evaluates a point) is documented with the evaluation paths in :mod:`landscape.evaluate.paths`
and :mod:`landscape.evaluate.paths.chunks`.

The code: :func:`surface_1d` and :func:`surface_2d` build an evaluator and evaluate every
point; :func:`compute_surface` evaluates the points a writer has not done yet, on one process
or (with an MPI communicator) through :mod:`landscape.mpi`. On one process both go through the
same chunk loop (:func:`evaluate_chunks`) over a :class:`~landscape.job.SurfaceJob`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import nn

from landscape.evaluate import SurfaceEvaluator
from landscape.grid import Surface, grid_axis
from landscape.job import SurfaceJob, chunk_limit, points_bar

if TYPE_CHECKING:  # pragma: no cover
    from landscape.directions import Directions

#: ``callback(indices, metrics)``: flat indices of a chunk of points and their values
Callback = Callable[[np.ndarray, dict[str, np.ndarray]], None]


def evaluate_chunks(
    job: SurfaceJob, chunk: int, bar: Any, callback: Callback | None = None
) -> tuple[float, int]:
    """Evaluate the points ``job.todo`` in chunks of ``chunk`` in flat-index order, storing
    each chunk in ``job`` (and calling ``callback``) as it is done. Returns ``(seconds spent
    evaluating, chunks)``."""
    busy = 0.0
    chunks = 0
    for first in range(0, len(job.todo), chunk):
        indices = job.todo[first : first + chunk]
        tic = time.perf_counter()
        values = job.evaluator.evaluate_points(job.coords[indices])
        busy += time.perf_counter() - tic
        job.put(indices, values)
        if callback is not None:
            callback(indices, values)
        chunks += 1
        bar.update(len(indices))
    return busy, chunks


# --------------------------------------------------------------------------------------------
# whole surfaces
# --------------------------------------------------------------------------------------------


def _whole_surface(
    evaluator: SurfaceEvaluator,
    x: np.ndarray,
    y: np.ndarray | None,
    progress: bool,
    callback: Callback | None,
    chunk_size: int | None,
) -> Surface:
    job = SurfaceJob(evaluator, None, x, y)
    chunk = chunk_size or evaluator.default_chunk_size
    if chunk < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk}")
    with points_bar(job.size, progress) as bar:
        evaluate_chunks(job, chunk, bar, callback)
    return job.surface({})


def surface_1d(
    model: nn.Module,
    directions: Directions,
    data: Any,
    *,
    x: np.ndarray | Sequence[float] | None = None,
    progress: bool = True,
    callback: Callback | None = None,
    chunk_size: int | None = None,
    **evaluator_options: Any,
) -> Surface:
    """The loss along one direction at ``x`` (default ``np.linspace(-1, 1, 51)``).

    ``evaluator_options`` go to :class:`~landscape.evaluate.SurfaceEvaluator` (``loss``,
    ``test_data``, ``bn_mode``, ``batch_size``, ``subset``, ``mode``, ...). Points are
    evaluated in chunks of ``chunk_size`` (default: the evaluator's) with a tqdm bar in
    points/s; ``callback(indices, metrics)`` is called after each chunk with the flat indices
    and their values.
    """
    x = grid_axis("x", np.linspace(-1.0, 1.0, 51) if x is None else x)
    if directions.y is not None:
        raise ValueError("surface_1d needs 1-D directions (directions.y is set): use surface_2d")
    evaluator = SurfaceEvaluator(model, directions, data, **evaluator_options)
    return _whole_surface(evaluator, x, None, progress, callback, chunk_size)


def surface_2d(
    model: nn.Module,
    directions: Directions,
    data: Any,
    *,
    x: np.ndarray | Sequence[float] | None = None,
    y: np.ndarray | Sequence[float] | None = None,
    progress: bool = True,
    callback: Callback | None = None,
    chunk_size: int | None = None,
    **evaluator_options: Any,
) -> Surface:
    """The loss on the plane ``theta0 + a * dx + b * dy`` over ``x`` × ``y``.

    Defaults ``np.linspace(-1, 1, 51)`` for both axes. Arrays come back shaped ``(ny, nx)``
    with element ``[i, j]`` at ``(x[j], y[i])``; see :func:`surface_1d` for the options.
    """
    x = grid_axis("x", np.linspace(-1.0, 1.0, 51) if x is None else x)
    y = grid_axis("y", np.linspace(-1.0, 1.0, 51) if y is None else y)
    if directions.y is None:
        raise ValueError("surface_2d needs 2-D directions (directions.y is None)")
    evaluator = SurfaceEvaluator(model, directions, data, **evaluator_options)
    return _whole_surface(evaluator, x, y, progress, callback, chunk_size)


# --------------------------------------------------------------------------------------------
# the points a writer has not done yet, on one process or MPI ranks
# --------------------------------------------------------------------------------------------


def compute_surface(
    evaluator: Any,
    writer: Any = None,
    *,
    x: Any = None,
    y: Any = None,
    comm: Any = None,
    chunk_size: int | None = None,
    progress: bool = True,
) -> Surface:
    """Evaluate the points of a grid that are not done yet and return the whole surface.

    Re-running onto a partial file computes only what is missing (the writer's ``todo()``).
    On one process (``comm=None``, the default; mpi4py is not imported) chunks of
    ``chunk_size`` points are evaluated in flat-index order, each written (and flushed) as soon
    as it is done; under MPI, :mod:`landscape.mpi` hands chunks out dynamically (rank 0
    writes).

    Args:
        evaluator: a :class:`~landscape.evaluate.SurfaceEvaluator` (anything with
            ``metric_names``, ``evaluate_points(coords)`` and ``provenance``). Under MPI every
            rank passes its own, built the same way.
        writer: a :class:`~landscape.io.SurfaceWriter` (on rank 0 only; ``None`` on the other
            ranks). Its grid is used, only its ``todo()`` points are evaluated, and every
            chunk is written and flushed as it arrives. ``None``: every point is evaluated and
            the surface is kept in memory (then ``x`` (and ``y``) give the grid).
        x, y: grid coordinates when there is no writer (rank 0; ignored on other ranks).
        comm: an mpi4py communicator, or ``None`` for one process (mpi4py is then never
            imported). A communicator of size 1 also runs the one-process loop.
        chunk_size: points per chunk (default: the evaluator's ``default_chunk_size``, or 16).
            Under MPI it is the largest chunk; chunks shrink towards the end of the grid.
        progress: a tqdm bar in points/s (rank 0).

    Returns:
        The :class:`~landscape.grid.Surface` (on every rank under MPI): the writer's
        contents when there is a writer (points done earlier included), with ``provenance``
        extended by ``nproc`` and ``ranks`` (per-rank ``points``, ``chunks``, ``busy_s``,
        ``wall_s``; :func:`format_rank_report` turns them into lines for a log).

    Raises:
        ValueError: inconsistent grid, metric names or chunk size (one process). Under MPI any
            exception aborts the job (``comm.Abort(1)``) after printing its message.
    """
    if comm is not None and comm.Get_size() != 1:
        from landscape.mpi import compute_distributed

        return compute_distributed(evaluator, writer, x, y, comm, chunk_size, progress)
    start_time = time.perf_counter()
    job = SurfaceJob(evaluator, writer, x, y)
    chunk = chunk_limit(evaluator, chunk_size)
    with job.progress_bar(progress) as bar:
        busy, chunks = evaluate_chunks(job, chunk, bar)
    wall = time.perf_counter() - start_time
    ranks = [{"rank": 0, "points": len(job.todo), "chunks": chunks, "busy_s": busy, "wall_s": wall}]
    return job.surface({"nproc": 1, "ranks": ranks})


def format_rank_report(ranks: list[Mapping[str, Any]]) -> list[str]:
    """One line per rank: points (share), chunks, busy seconds and points/s."""
    total = sum(int(r["points"]) for r in ranks) or 1
    lines = []
    for r in ranks:
        busy = float(r["busy_s"])
        rate = r["points"] / busy if busy > 0 else float("nan")
        lines.append(
            f"rank {r['rank']}: {r['points']} points ({100.0 * r['points'] / total:.0f}%) in "
            f"{r['chunks']} chunks, busy {busy:.2f} s of {float(r['wall_s']):.2f} s "
            f"({rate:.1f} points/s)"
        )
    return lines
