"""Rank 0 under MPI: the dispatcher of chunks of points, and rank 0's own share of the work.

Rank 0 is both the dispatcher and a worker. It evaluates its own chunks one point (one
``vmap`` or K-point compiled call) at a time and answers worker messages between points
(``Iprobe``), so a worker waits at most one point for its next chunk; each worker also keeps
one chunk in reserve (:data:`PREFETCH` outstanding), so it normally never waits. Chunk sizes
shrink towards the end of the grid (guided self-scheduling) so that the ranks finish together.
Results arrive at rank 0, which stores them in the :class:`~landscape.job.SurfaceJob` (and so
writes them); the messages are :mod:`landscape.mpi.worker`'s.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Any

import numpy as np

from landscape.job import SurfaceJob
from landscape.mpi.failure import TAG_FAILURE, receive_failure

TAG_RESULT = 71  # worker -> rank 0: None (hello) or (indices, metrics)
TAG_TASK = 72  # rank 0 -> worker: (indices, coords) or None (stop)
PREFETCH = 2  # chunks a worker holds at most (one being computed, one in reserve)


class Dispatcher:
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
        holders = self.size * PREFETCH
        size = math.ceil(len(self.todo) / (2 * holders))
        size = max(self.step, min(self.max_chunk, size))
        size = max(1, min(size, len(self.todo)))
        return np.array([self.todo.popleft() for _ in range(size)], dtype=np.int64)

    def _send(self, message: Any, worker: int) -> None:
        # Non-blocking: rank 0 must never wait in a send (a large task in a rendezvous send
        # while the worker sends its results would deadlock); requests are kept until done.
        self.sends = [request for request in self.sends if not request.Test()]
        self.sends.append(self.comm.isend(message, dest=worker, tag=TAG_TASK))

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

    def serve(self, job: SurfaceJob, counts: dict, bar: Any, block: bool) -> None:
        """Answer every waiting worker message (waiting for one first when ``block``); a
        worker's failure report is printed and raises :class:`~landscape.mpi.failure.RankFailed`
        (:func:`~landscape.mpi.failure.receive_failure`)."""
        comm, status = self.comm, self.status
        any_source, any_tag = self.MPI.ANY_SOURCE, self.MPI.ANY_TAG
        while self.active:
            if block:
                comm.Probe(source=any_source, tag=any_tag, status=status)
                block = False
            elif not comm.Iprobe(source=any_source, tag=any_tag, status=status):
                return
            worker = status.Get_source()
            if status.Get_tag() == TAG_FAILURE:
                receive_failure(comm, worker)
            message = comm.recv(source=worker, tag=TAG_RESULT)
            if message is None:  # hello: fill the worker's reserve
                for _ in range(PREFETCH):
                    self._give(worker)
                    if worker not in self.active:
                        break
                continue
            indices, values = message
            self.outstanding[worker] -= 1
            job.put(indices, values)
            counts[worker] += len(indices)
            bar.update(len(indices))
            self._give(worker)


def run_rank0(
    job: SurfaceJob, comm: Any, max_chunk: int, step: int, progress: bool
) -> tuple[float, int, dict[int, int]]:
    """Hand out ``job.todo`` to the workers and evaluate rank 0's own chunks, ``step`` points
    per call, until every point is done. Returns ``(seconds spent evaluating, chunks, points
    per rank)``."""
    dispatcher = Dispatcher(comm, job.todo, job.coords, max_chunk, step)
    counts = dict.fromkeys(range(comm.Get_size()), 0)
    busy = 0.0
    chunks = 0
    with job.progress_bar(progress) as bar:
        while dispatcher.todo or dispatcher.active:
            dispatcher.serve(job, counts, bar, block=not dispatcher.todo)
            chunk = dispatcher.next_chunk()
            if chunk is None:
                continue
            parts = []
            for first in range(0, len(chunk), step):
                tic = time.perf_counter()
                parts.append(job.evaluator.evaluate_points(job.coords[chunk[first : first + step]]))
                busy += time.perf_counter() - tic
                dispatcher.serve(job, counts, bar, block=False)
            values = {name: np.concatenate([p[name] for p in parts]) for name in job.names}
            job.put(chunk, values)
            counts[0] += len(chunk)
            chunks += 1
            bar.update(len(chunk))
    dispatcher.finish()
    return busy, chunks, counts
