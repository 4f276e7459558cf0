"""A surface over MPI ranks (:func:`compute_distributed`) and ending a failed job (:func:`abort`).

Every rank holds its own evaluator (same model, directions and data); rank 0 alone holds the
writer. Rank 0 dispatches chunks of flat indices dynamically and computes too
(:mod:`landscape.mpi.dispatcher`), the other ranks evaluate what they are sent
(:mod:`landscape.mpi.worker`); workers send their results to rank 0, which writes them, and no
other rank opens the file (no HDF5 locking across processes).

Per-point values depend only on the point's coordinates (``SurfaceEvaluator.evaluate_points``
is deterministic per point), so with one thread per rank the surface is identical, bit for
bit, on 1, 2 or 3 ranks and whichever rank computed a point.

An exception on any rank ends every rank of the job instead of leaving the others waiting
(:func:`abort`): its message (one ``error:`` line naming the rank) is sent to rank 0, which
prints it (or the rank prints it itself when rank 0 does not listen), then ``comm.Abort(1)``
follows after :data:`~landscape.mpi.failure.ABORT_GRACE_S` (:mod:`landscape.mpi.failure`).

Load balance: the returned surface's ``provenance`` gains ``nproc`` and ``ranks``, a list with
one entry per rank: ``points``, ``chunks``, ``busy_s`` (seconds spent evaluating) and ``wall_s``.

.. note::
   tomgoldstein/loss-landscape splits the grid statically into contiguous blocks, gathers the
   whole result array after every point and lets rank 0 rewrite the full datasets; a slow rank
   stalls the others at every point. Its HDF5 files are opened by every rank (file-lock errors,
   worked around by disabling HDF5 locking); here only rank 0 opens the file.
"""

from __future__ import annotations

import sys
import time
from typing import Any, NoReturn

from landscape.grid import Surface
from landscape.job import SurfaceJob, chunk_limit, points_per_call
from landscape.mpi.dispatcher import run_rank0
from landscape.mpi.failure import (
    RankFailed,
    abort_quietly,
    barrier,
    describe_current,
    end_job,
)
from landscape.mpi.worker import run_worker


def compute_distributed(
    evaluator: Any,
    writer: Any,
    x: Any,
    y: Any,
    comm: Any,
    chunk_size: int | None,
    progress: bool,
) -> Surface:
    """:func:`landscape.compute_surface` on the ranks of ``comm`` (more than one): the surface,
    on every rank. Any exception aborts the whole job (:func:`abort`)."""
    try:
        rank = comm.Get_rank()
        if rank != 0 and writer is not None:
            raise ValueError(f"only rank 0 may hold the surface writer (rank {rank} has one)")
        # Every rank has built its evaluator: start together, so the first chunks spread evenly
        # (rank 0 hears of a rank that failed to build one and will never arrive).
        barrier(comm)
        start_time = time.perf_counter()
        if rank == 0:
            job = SurfaceJob(evaluator, writer, x, y)
            max_chunk = chunk_limit(evaluator, chunk_size)
            step = points_per_call(evaluator)
            busy, chunks, counts = run_rank0(job, comm, max_chunk, step, progress)
        else:
            busy, chunks = run_worker(evaluator, comm)
        wall = time.perf_counter() - start_time
        gathered = comm.gather((rank, chunks, busy, wall), root=0)
        surface = None
        if rank == 0:
            ranks = [
                {"rank": r, "points": counts[r], "chunks": c, "busy_s": b, "wall_s": w}
                for r, c, b, w in gathered
            ]
            surface = job.surface({"nproc": comm.Get_size(), "ranks": ranks})
        return comm.bcast(surface, root=0)
    except BaseException:  # noqa: BLE001 - any failure must end the whole job
        abort(comm)
        raise  # pragma: no cover - Abort does not return


def abort(comm: Any, code: int = 1) -> NoReturn:
    """End the whole job after the current exception (never returns).

    One ``error:`` line naming the rank (the traceback too with ``SAMLAB_DEBUG=1``) reaches
    stderr through :func:`landscape.mpi.failure.end_job`: sent to rank 0 when it listens, else
    printed here, then a grace period before ``MPI_Abort``. On rank 0 after
    :class:`~landscape.mpi.failure.RankFailed` the failing rank's message is already printed:
    the job just ends."""
    error = sys.exc_info()[1]
    if isinstance(error, RankFailed):
        abort_quietly(comm, code)
    try:
        rank = comm.Get_rank()
    except Exception:  # noqa: BLE001
        rank = "?"
    end_job(comm, describe_current(rank), code)
