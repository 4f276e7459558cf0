"""Drive a :class:`~landscape.surface.SurfaceEvaluator` over a grid, on one process or MPI ranks.

:func:`compute_surface` evaluates every grid point that is still to do (a
:class:`~landscape.io.SurfaceWriter`'s ``todo()`` list, so re-running onto a partial file
computes only what is missing) and returns the :class:`~landscape.surface.Surface`.

- **One process** (``comm=None``, the default; mpi4py is not imported): chunks of
  ``chunk_size`` points in flat-index order, each written (and flushed) as soon as it is done.
- **MPI** (``comm`` an mpi4py communicator with more than one rank): every rank holds its own
  evaluator (same model, directions and data); rank 0 alone holds the writer. Chunks of flat
  indices are handed out **dynamically**: rank 0 is both the dispatcher and a worker. It
  evaluates its own chunks one point (one ``vmap`` call) at a time and answers worker messages
  between points (``Iprobe``), so a worker waits at most one point for its next chunk; each
  worker also keeps one chunk in reserve (two outstanding), so it normally never waits. Chunk
  sizes shrink towards the end of the grid (guided self-scheduling) so that the ranks finish
  together. Workers send their results to rank 0, which writes them; no other rank opens the
  file (no HDF5 locking across processes).

Per-point values depend only on the point's coordinates (``SurfaceEvaluator.evaluate_points``
is deterministic per point), so with one thread per rank the surface is identical, bit for
bit, on 1, 2 or 3 ranks and whichever rank computed a point.

An exception on any rank prints its traceback (prefixed with the rank) and calls
``comm.Abort(1)``, which ends every rank of the job instead of leaving the others waiting.

Load balance: the returned surface's ``provenance`` gains ``nproc`` and ``ranks``, a list with
one entry per rank: ``points``, ``chunks``, ``busy_s`` (seconds spent evaluating) and ``wall_s``;
:func:`format_rank_report` turns it into lines for a log.

.. note::
   tomgoldstein/loss-landscape splits the grid statically into contiguous blocks, gathers the
   whole result array after every point and lets rank 0 rewrite the full datasets; a slow rank
   stalls the others at every point. Its HDF5 files are opened by every rank (file-lock errors,
   worked around by disabling HDF5 locking); here only rank 0 opens the file.
"""

from __future__ import annotations

import math
import os
import sys
import time
import traceback
from collections import deque
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from landscape.surface import Surface, grid_coordinates

__all__ = ["compute_surface", "format_rank_report"]

_TAG_RESULT = 71  # worker -> rank 0: None (hello) or (indices, metrics)
_TAG_TASK = 72  # rank 0 -> worker: (indices, coords) or None (stop)
_PREFETCH = 2  # chunks a worker holds at most (one being computed, one in reserve)
_DEFAULT_CHUNK = 16


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

    Args:
        evaluator: a :class:`~landscape.surface.SurfaceEvaluator` (anything with
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
        The :class:`~landscape.surface.Surface` (on every rank under MPI): the writer's
        contents when there is a writer (points done earlier included), with ``provenance``
        extended by ``nproc`` and ``ranks`` (per-rank ``points``, ``chunks``, ``busy_s``,
        ``wall_s``).

    Raises:
        ValueError: inconsistent grid, metric names or chunk size (one process). Under MPI any
            exception aborts the job (``comm.Abort(1)``) after printing its traceback.
    """
    if comm is None or comm.Get_size() == 1:
        return _compute_single(evaluator, writer, x, y, chunk_size, progress)
    try:
        return _compute_mpi(evaluator, writer, x, y, comm, chunk_size, progress)
    except BaseException:  # noqa: BLE001 - any failure must end the whole job
        _abort(comm)
        raise  # pragma: no cover - Abort does not return


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


# --------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------


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


def _check_names(evaluator: Any, writer: Any) -> tuple[str, ...]:
    names = tuple(evaluator.metric_names)
    if writer is not None and set(writer.metric_names) != set(names):
        raise ValueError(
            f"the surface file holds metrics {sorted(writer.metric_names)}, the evaluator "
            f"computes {sorted(names)}"
        )
    return names


def _check_ndim(evaluator: Any, y: np.ndarray | None) -> None:
    ndim = getattr(evaluator, "ndim", None)
    grid_ndim = 1 if y is None else 2
    if ndim is not None and ndim != grid_ndim:
        raise ValueError(f"the evaluator has {ndim}-D directions but the grid is {grid_ndim}-D")


def _max_chunk(evaluator: Any, chunk_size: int | None) -> int:
    if chunk_size is None:
        chunk_size = int(getattr(evaluator, "default_chunk_size", _DEFAULT_CHUNK))
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)):
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    return int(chunk_size)


def _step(evaluator: Any) -> int:
    """Points per evaluation call: K for vmap or compiled K-point calls (a whole call), else
    1."""
    return max(1, int(getattr(evaluator, "points_per_call", 1)))


class _Store:
    """Results on rank 0: written through the writer, or kept in memory."""

    def __init__(self, writer: Any, names: tuple[str, ...], size: int) -> None:
        self.writer = writer
        self.names = names
        self.metrics = {name: np.full(size, np.nan) for name in names}
        self.done = np.zeros(size, dtype=bool)
        if writer is not None:
            flat_done = np.asarray(writer.done, dtype=bool).reshape(-1)
            self.done[:] = flat_done

    def put(self, indices: np.ndarray, values: Mapping[str, np.ndarray]) -> None:
        values = {name: np.asarray(values[name], dtype=np.float64) for name in self.names}
        if self.writer is not None:
            self.writer.write(indices, values)
        for name, array in values.items():
            self.metrics[name][indices] = array
        self.done[indices] = True

    def surface(self, x: np.ndarray, y: np.ndarray | None, evaluator: Any, extra: dict) -> Surface:
        """The result: the file's contents and provenance (or the evaluator's), plus ``extra``."""
        if self.writer is not None:
            surface = self.writer.surface()
            return replace(surface, provenance={**surface.provenance, **extra})
        shape = (x.size,) if y is None else (y.size, x.size)
        return Surface(
            x=x,
            y=y,
            metrics={name: array.reshape(shape) for name, array in self.metrics.items()},
            done=self.done.reshape(shape),
            provenance={**_evaluator_provenance(evaluator), **extra},
            sample_indices=dict(getattr(evaluator, "sample_indices", None) or {}),
        )


def _evaluator_provenance(evaluator: Any) -> dict:
    provenance = getattr(evaluator, "provenance", None)
    return dict(provenance) if isinstance(provenance, Mapping) else {}


def _bar(total: int, initial: int, progress: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        unit="point",
        desc="surface",
        disable=not progress,
        dynamic_ncols=True,
        smoothing=0.1,
    )


# --------------------------------------------------------------------------------------------
# one process
# --------------------------------------------------------------------------------------------


def _compute_single(
    evaluator: Any, writer: Any, x: Any, y: Any, chunk_size: int | None, progress: bool
) -> Surface:
    start_time = time.perf_counter()
    x, y = _grid(writer, x, y)
    _check_ndim(evaluator, y)
    names = _check_names(evaluator, writer)
    chunk = _max_chunk(evaluator, chunk_size)
    coords = grid_coordinates(x, y)
    store = _Store(writer, names, len(coords))
    todo = np.flatnonzero(~store.done).astype(np.int64)
    busy = 0.0
    chunks = 0
    with _bar(len(coords), len(coords) - len(todo), progress) as bar:
        for first in range(0, len(todo), chunk):
            indices = todo[first : first + chunk]
            tic = time.perf_counter()
            values = evaluator.evaluate_points(coords[indices])
            busy += time.perf_counter() - tic
            store.put(indices, values)
            chunks += 1
            bar.update(len(indices))
    ranks = [
        {
            "rank": 0,
            "points": len(todo),
            "chunks": chunks,
            "busy_s": busy,
            "wall_s": time.perf_counter() - start_time,
        }
    ]
    return store.surface(x, y, evaluator, {"nproc": 1, "ranks": ranks})


# --------------------------------------------------------------------------------------------
# MPI
# --------------------------------------------------------------------------------------------


def _abort(comm: Any, code: int = 1) -> None:
    """Print the current exception with the rank, then end the whole job (never returns)."""
    try:
        rank = comm.Get_rank()
    except Exception:  # noqa: BLE001
        rank = "?"
    try:
        sys.stdout.flush()
        text = traceback.format_exc()
        sys.stderr.write(f"[landscape rank {rank}] failed; aborting the MPI job\n{text}")
        sys.stderr.flush()
    finally:
        try:
            comm.Abort(code)
        finally:
            # MPI_Abort may return after notifying the process manager (seen with MPICH 5):
            # make sure this rank is gone too, without running atexit handlers that would
            # finalize MPI and wait for the others.
            os._exit(code)


class _Dispatcher:
    """Rank 0's side: the queue of remaining points and the workers' outstanding chunks."""

    def __init__(self, comm: Any, todo: np.ndarray, coords: np.ndarray, max_chunk: int, step: int):
        from mpi4py import MPI

        self.MPI = MPI
        self.comm = comm
        self.size = comm.Get_size()
        self.todo = deque(todo.tolist())
        self.coords = coords
        self.max_chunk = max_chunk
        self.step = step
        self.outstanding = dict.fromkeys(range(1, self.size), 0)
        self.active = set(range(1, self.size))
        self.status = MPI.Status()
        self.sends: list[Any] = []

    def next_chunk(self) -> np.ndarray | None:
        """Guided self-scheduling: about remaining / (2 * holders), within [step, max_chunk]."""
        if not self.todo:
            return None
        holders = self.size * _PREFETCH
        size = math.ceil(len(self.todo) / (2 * holders))
        size = max(self.step, min(self.max_chunk, size))
        size = max(1, min(size, len(self.todo)))
        return np.array([self.todo.popleft() for _ in range(size)], dtype=np.int64)

    def _send(self, message: Any, worker: int) -> None:
        # Non-blocking: rank 0 must never wait in a send (a large task in a rendezvous send
        # while the worker sends its results would deadlock); requests are kept until done.
        self.sends = [request for request in self.sends if not request.Test()]
        self.sends.append(self.comm.isend(message, dest=worker, tag=_TAG_TASK))

    def _give(self, worker: int) -> None:
        chunk = self.next_chunk()
        if chunk is None:
            if self.outstanding[worker] == 0:
                self._send(None, worker)
                self.active.discard(worker)
            return
        self._send((chunk, self.coords[chunk]), worker)
        self.outstanding[worker] += 1

    def finish(self) -> None:
        """Wait for the last sends (every worker has its stop message by then)."""
        self.MPI.Request.Waitall(self.sends)
        self.sends = []

    def serve(self, store: _Store, counts: dict, bar: Any, block: bool) -> None:
        """Answer every waiting worker message (waiting for one first when ``block``)."""
        comm, status = self.comm, self.status
        while self.active:
            if block:
                comm.Probe(source=self.MPI.ANY_SOURCE, tag=_TAG_RESULT, status=status)
                block = False
            elif not comm.Iprobe(source=self.MPI.ANY_SOURCE, tag=_TAG_RESULT, status=status):
                return
            worker = status.Get_source()
            message = comm.recv(source=worker, tag=_TAG_RESULT)
            if message is None:  # hello: fill the worker's reserve
                for _ in range(_PREFETCH):
                    self._give(worker)
                    if worker not in self.active:
                        break
                continue
            indices, values = message
            self.outstanding[worker] -= 1
            store.put(indices, values)
            counts[worker] += len(indices)
            bar.update(len(indices))
            self._give(worker)


def _compute_mpi(
    evaluator: Any,
    writer: Any,
    x: Any,
    y: Any,
    comm: Any,
    chunk_size: int | None,
    progress: bool,
) -> Surface:
    rank = comm.Get_rank()
    if rank != 0 and writer is not None:
        raise ValueError(f"only rank 0 may hold the surface writer (rank {rank} has one)")
    names = tuple(evaluator.metric_names)
    # Every rank has built its evaluator: start together, so the first chunks spread evenly.
    comm.Barrier()
    start_time = time.perf_counter()
    if rank == 0:
        store, grid, busy, chunks, counts = _rank0(
            evaluator, writer, x, y, comm, chunk_size, progress, names
        )
    else:
        busy, chunks = _worker(evaluator, comm)
    wall = time.perf_counter() - start_time
    gathered = comm.gather((rank, chunks, busy, wall), root=0)
    surface = None
    if rank == 0:
        ranks = [
            {"rank": r, "points": counts[r], "chunks": c, "busy_s": b, "wall_s": w}
            for r, c, b, w in gathered
        ]
        surface = store.surface(*grid, evaluator, {"nproc": comm.Get_size(), "ranks": ranks})
    return comm.bcast(surface, root=0)


def _rank0(
    evaluator: Any,
    writer: Any,
    x: Any,
    y: Any,
    comm: Any,
    chunk_size: int | None,
    progress: bool,
    names: tuple[str, ...],
) -> tuple[_Store, tuple, float, int, dict[int, int]]:
    x, y = _grid(writer, x, y)
    _check_ndim(evaluator, y)
    _check_names(evaluator, writer)
    max_chunk = _max_chunk(evaluator, chunk_size)
    step = _step(evaluator)
    coords = grid_coordinates(x, y)
    store = _Store(writer, names, len(coords))
    todo = np.flatnonzero(~store.done).astype(np.int64)
    dispatcher = _Dispatcher(comm, todo, coords, max_chunk, step)
    counts = dict.fromkeys(range(comm.Get_size()), 0)
    busy = 0.0
    chunks = 0
    with _bar(len(coords), len(coords) - len(todo), progress) as bar:
        while dispatcher.todo or dispatcher.active:
            dispatcher.serve(store, counts, bar, block=not dispatcher.todo)
            chunk = dispatcher.next_chunk()
            if chunk is None:
                continue
            parts = []
            for first in range(0, len(chunk), step):
                tic = time.perf_counter()
                parts.append(evaluator.evaluate_points(coords[chunk[first : first + step]]))
                busy += time.perf_counter() - tic
                dispatcher.serve(store, counts, bar, block=False)
            values = {name: np.concatenate([p[name] for p in parts]) for name in names}
            store.put(chunk, values)
            counts[0] += len(chunk)
            chunks += 1
            bar.update(len(chunk))
    dispatcher.finish()
    return store, (x, y), busy, chunks, counts


def _worker(evaluator: Any, comm: Any) -> tuple[float, int]:
    busy = 0.0
    chunks = 0
    comm.send(None, dest=0, tag=_TAG_RESULT)  # hello
    while True:
        task = comm.recv(source=0, tag=_TAG_TASK)
        if task is None:
            return busy, chunks
        indices, coords = task
        tic = time.perf_counter()
        values = evaluator.evaluate_points(coords)
        busy += time.perf_counter() - tic
        chunks += 1
        comm.send((indices, {k: np.asarray(v) for k, v in values.items()}), dest=0, tag=_TAG_RESULT)
