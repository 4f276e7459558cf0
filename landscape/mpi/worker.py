"""A worker rank under MPI: evaluates the chunks rank 0 sends until it is told to stop.

Messages (tags of :mod:`landscape.mpi.dispatcher`): the worker says hello (``None``), then
receives ``(indices, coords)`` tasks and sends back ``(indices, metrics)`` until a ``None``
task.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from landscape.mpi.dispatcher import TAG_RESULT, TAG_TASK


def run_worker(evaluator: Any, comm: Any) -> tuple[float, int]:
    """Evaluate rank 0's tasks until the stop message; ``(seconds evaluating, chunks)``."""
    busy = 0.0
    chunks = 0
    comm.send(None, dest=0, tag=TAG_RESULT)  # hello
    while True:
        task = comm.recv(source=0, tag=TAG_TASK)
        if task is None:
            return busy, chunks
        indices, coords = task
        tic = time.perf_counter()
        values = evaluator.evaluate_points(coords)
        busy += time.perf_counter() - tic
        chunks += 1
        comm.send((indices, {k: np.asarray(v) for k, v in values.items()}), dest=0, tag=TAG_RESULT)
