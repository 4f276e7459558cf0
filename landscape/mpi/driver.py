"""A surface over MPI ranks (:func:`compute_distributed`) and ending a failed job (:func:`abort`).

Every rank holds its own evaluator (same model, directions and data); rank 0 alone holds the
writer. Rank 0 dispatches chunks of flat indices dynamically and computes too
(:mod:`landscape.mpi.dispatcher`), the other ranks evaluate what they are sent
(:mod:`landscape.mpi.worker`); workers send their results to rank 0, which writes them, and no
other rank opens the file (no HDF5 locking across processes).

Per-point values depend only on the point's coordinates (``SurfaceEvaluator.evaluate_points``
is deterministic per point), so with one thread per rank the surface is identical, bit for
bit, on 1, 2 or 3 ranks and whichever rank computed a point.

An exception on any rank prints its traceback (prefixed with the rank) and calls
``comm.Abort(1)`` after :data:`ABORT_GRACE_S` (so the process manager forwards the traceback),
which ends every rank of the job instead of leaving the others waiting.

Load balance: the returned surface's ``provenance`` gains ``nproc`` and ``ranks``, a list with
one entry per rank: ``points``, ``chunks``, ``busy_s`` (seconds spent evaluating) and ``wall_s``.

.. note::
   tomgoldstein/loss-landscape splits the grid statically into contiguous blocks, gathers the
   whole result array after every point and lets rank 0 rewrite the full datasets; a slow rank
   stalls the others at every point. Its HDF5 files are opened by every rank (file-lock errors,
   worked around by disabling HDF5 locking); here only rank 0 opens the file.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from typing import Any

from landscape.grid import Surface
from landscape.job import SurfaceJob, chunk_limit, points_per_call
from landscape.mpi.dispatcher import run_rank0
from landscape.mpi.worker import run_worker

#: Seconds a failing rank waits between writing its traceback and ``MPI_Abort``. The rank's
#: stderr reaches the terminal through the process manager (Hydra's proxy, then ``mpiexec``),
#: which stops forwarding as soon as it handles the abort: without the pause a loaded machine
#: loses the traceback and the job ends with no message at all.
ABORT_GRACE_S = 1.0


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
        # Every rank has built its evaluator: start together, so the first chunks spread evenly.
        comm.Barrier()
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


def abort(comm: Any, code: int = 1) -> None:
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
        time.sleep(ABORT_GRACE_S)
    finally:
        try:
            comm.Abort(code)
        finally:
            # MPI_Abort may return after notifying the process manager (seen with MPICH 5):
            # make sure this rank is gone too, without running atexit handlers that would
            # finalize MPI and wait for the others.
            os._exit(code)
