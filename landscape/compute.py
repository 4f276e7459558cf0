"""Loss surfaces of any ``nn.Module`` along one or two directions (Li et al., NeurIPS 2018).

A grid point ``(a, b)`` is the model with its tensors set to ``theta0 + a * dx + b * dy``,
**recomputed from the centre** ``theta0`` at every point (never stepped incrementally): one
fused ``axpy`` into a preallocated flat buffer and one ``foreach`` copy into the model's
tensors. The evaluation data are materialised once on the device
(:func:`~landscape.evaluate.as_tensors`); each point is one pass over them in eval mode without
gradients. Loss and accuracy are sample-weighted means over all evaluation samples; their
standard errors come from the means of the nominal batches of ``batch_size``. The grid
convention is :mod:`landscape.grid`'s.

Evaluation modes of :class:`~landscape.evaluate.SurfaceEvaluator`:

- ``"eager"``: the plain loop (the reference twin). The forward runs in chunks of
  ``forward_chunk`` rows (see below); the outputs of a group of points (up to 64 MiB) are kept
  and their metrics computed together: per-sample losses and correctness of all their rows in
  one call, per-batch sums by reshaping, one host copy and numpy over the whole group, so the
  metric bookkeeping costs O(1) tensor ops per group of points instead of a few per batch.
- ``"compiled"``: the same loop with the forward under ``torch.compile`` (at the chunk shape;
  the last chunk is padded) and, BatchNorm being in eval mode, folded into the preceding
  conv/linear layer; the folded weights are recomputed from the perturbed weights at every
  point and written in place, so the compiled graph is built once (a recompile raises). Falls
  back to eager with one warning when compilation fails, and without a warning (noted in
  ``provenance["execution"]["compiled_fallback"]``) when, on a model cheap enough to time
  whole passes, the compiled pass does not measure faster than the eager one (a compiled call
  costs ~0.1 ms of guards and wrapper here: more than it saves on the digits MLP). On such
  cheap models it also tries **K points per compiled call** (``vmap`` over K stacked weight
  sets inside one compiled graph per evaluation set, the weights built from the coordinates in
  the graph, loss, accuracy and per-batch sums fused; K from a 32 MiB activation budget, at
  most 64, tried from 4), kept only when it is position-independent bitwise, agrees with the
  eager loop and measures >= 10% faster per point than the path chosen so far; then
  ``points_per_call`` and ``default_chunk_size`` are K.
- ``"vmap"``: ``torch.func.functional_call`` + ``vmap`` over K stacked sets of the moved
  tensors (the others, buffers included, stay unbatched), K points per forward; eval mode only.
- ``"auto"``: eager on CPU. On CUDA (``bn_mode="eval"``, one process) a probe at the centre
  checks ``vmap`` (K points per forward) against the eager loop and times both in interleaved
  rounds on a prefix of at most 1,024 training rows; ``vmap`` is taken only where it agrees
  within tolerance and measures at least 10% faster per point, else eager (timings and choice
  in ``provenance["execution"]["auto_vmap_probe"]``). Eager with ``bn_mode="recompute"`` and
  on one of several MPI ranks (which could choose differently).

Forward chunk (eager and compiled): ``forward_chunk`` rows per forward call, by default chosen
at construction by a timing probe at the centre (hill climbing from ``batch_size``: halving
while smaller activations stay in cache and save >= 10%, else doubling up to the whole set
while fewer calls do; a winner other than ``batch_size`` is confirmed against it in fresh
rounds), on whole passes for cheap models (a pass <= 0.25 s) and per sample on a prefix
otherwise; no probe for one of several MPI ranks (they would time each other's load, and
cannot agree without a collective: pass ``forward_chunk``). The chosen chunk is kept only if its
outputs equal, bit for bit, those of the batch-by-batch forward, so values never depend on it.
Measured here (one thread, shared 2-core AMD EPYC, AVX2): the digits MLP runs 1,024 rows per
call (0.29 ms per pass against 0.55 ms in batches of 128), the CIFAR ResNet-20 64 or 32 rows
(1.6-2.4 ms per sample against 2.0-3.3 ms at 128: 8 MB activations per tensor at 128), the
digits CNN stays at 128.

Measured by ``benchmarks/landscape_surface.py`` (ratio to the bare limit: one plain eager
forward per point at batch 128 over the same 1,024 samples, weights set by a plain axpy;
medians of paired per-round ratios, arms interleaved, process CPU time, one thread on a shared
2-core CPU; table in the README's "Landscape performance"): eager (with accuracy and standard
errors) 0.73 on the MLP, 0.94 on the CNN, 0.97 on ResNet-20; compiled 0.59 on the MLP (K = 64
points per compiled call), 0.61 on the CNN and 0.67 on ResNet-20; vmap 0.84-1.38 (K = 64, 5,
1): slower than eager on all three, hence eager on CPU. ``loss-landscapes`` (mean loss only,
all samples in one forward): 0.59 on the MLP (compiled / loss-landscapes 0.91 paired; eager
alone stays ~25% behind it there: the per-point cross-entropy and argmax kernels of 1,024
ten-class rows cost ~0.09 ms next to a 0.3 ms forward), 1.06 on the CNN and 2.2 on ResNet-20.
On GPUs a small model at batch 128 is launch-bound, which K points per forward may amortise,
so ``auto`` on CUDA measures ``vmap`` against eager at construction and keeps the faster one;
GPU timings are not recorded in this repository yet (the probe's are in the provenance).

Determinism: a point's value depends only on its coordinates, never on the chunk of points, the
group whose metrics are computed together, the forward chunk or the process that evaluates it
(per-sample values are row-independent and every per-batch sum reduces one contiguous row;
``vmap`` pads every chunk to the same K, and its per-point results were checked independent of
the point's position in the chunk on CPU; ``compiled`` pads the last chunk to the compiled
shape, and its K-point calls are padded to K and kept only where a check at construction finds
the same bits for the same points in another order). On CUDA, bitwise reproducibility also
needs deterministic kernels (``torch.use_deterministic_algorithms(True)``).

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
            exception aborts the job (``comm.Abort(1)``) after printing its traceback.
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
