"""Ending an MPI job when one rank fails, with its message on stderr every time.

A rank's stderr reaches the terminal through the process manager (Hydra's proxy, then
``mpiexec``), which stops forwarding as soon as it handles ``MPI_Abort``: on a loaded machine a
failing rank's last lines could be lost and the job end with no message at all. So a failing
rank (:func:`end_job`):

1. sends its message to rank 0 (tag :data:`TAG_FAILURE`) when it is not rank 0 itself, and
   waits up to :data:`ACK_WAIT_S` for rank 0's acknowledgement: rank 0 has printed it then;
2. without the acknowledgement (rank 0 is inside a collective operation, e.g. the Hessian's
   all-reduces, and cannot receive) prints the message itself; rank 0 skips a message it
   receives too late to acknowledge, so the message is printed once;
3. flushes, waits :data:`ABORT_GRACE_S` so the process manager forwards what was printed, and
   calls ``comm.Abort(code)``.

Rank 0 watches for such messages wherever it waits for the others point to point: while it
dispatches a surface's points (:mod:`landscape.mpi.dispatcher`) and in the barrier before
(:func:`barrier`). :func:`receive_failure` prints the message, acknowledges it and raises
:class:`RankFailed`, which ends the job without a second message.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from typing import Any, NoReturn

#: Seconds a failing rank waits between writing its message and ``MPI_Abort``, so that the
#: process manager forwards the message before it handles the abort.
ABORT_GRACE_S = 1.0
#: Seconds a failing rank waits for rank 0 to acknowledge (print) its message.
ACK_WAIT_S = 0.5
#: Rank 0 prints a failure message only this long before its deadline, leaving the
#: acknowledgement time to arrive (otherwise both ranks could print it).
ACK_MARGIN_S = 0.15
#: environment variables asking for tracebacks
DEBUG_VARIABLES = ("SAMLAB_DEBUG", "LANDSCAPE_TRACEBACK")
TAG_FAILURE = 73  # a failing rank -> rank 0: the message to print (str)
TAG_ACK = 74  # rank 0 -> the failing rank: printed


class RankFailed(Exception):
    """Rank 0 received (and printed) the failure of another rank."""

    def __init__(self, rank: int, message: str) -> None:
        super().__init__(f"rank {rank} failed: {(message.strip().splitlines() or [''])[-1]}")
        self.rank = rank
        self.message = message


def describe_current(rank: Any) -> str:
    """The exception being handled as the line(s) a failing rank reports: one ``error:`` line
    (type and message), followed by the traceback only with ``SAMLAB_DEBUG=1`` (or
    ``LANDSCAPE_TRACEBACK=1``)."""
    error = sys.exc_info()[1]
    text = " ".join(str(error).split()) or "no message"
    line = f"[landscape rank {rank}] error: {type(error).__name__}: {text}; aborting the MPI job"
    if any(os.environ.get(name, "") not in ("", "0") for name in DEBUG_VARIABLES):
        return f"{line}\n{traceback.format_exc()}"
    return f"{line} (run with SAMLAB_DEBUG=1 for the traceback)"


def _write(text: str) -> None:
    try:
        sys.stdout.flush()
    except Exception:  # noqa: BLE001 - a closed stdout must not hide the message
        pass
    sys.stderr.write(text if text.endswith("\n") else text + "\n")
    sys.stderr.flush()


def _acknowledged_by_rank0(comm: Any, message: str) -> bool:
    """Send ``message`` to rank 0; whether rank 0 printed it within :data:`ACK_WAIT_S`.

    The message carries its deadline (wall-clock time, the same on one node and close across
    synchronised nodes): rank 0 prints it only well before the deadline, so that a message
    this rank prints itself after waiting in vain is not printed a second time by rank 0."""
    try:
        deadline = time.time() + ACK_WAIT_S
        comm.isend((message, deadline), dest=0, tag=TAG_FAILURE)  # never waited for
        while time.time() < deadline:
            if comm.Iprobe(source=0, tag=TAG_ACK):
                comm.recv(source=0, tag=TAG_ACK)
                return True
            time.sleep(0.002)
    except Exception:  # noqa: BLE001 - MPI itself failing: print locally
        return False
    return False


def end_job(comm: Any, message: str, code: int = 1) -> NoReturn:
    """Make ``message`` reach stderr (through rank 0 when it listens, else from this rank;
    nothing when empty), then end every rank of ``comm``'s job with exit status ``code``.
    Never returns."""
    try:
        try:
            rank = comm.Get_rank()
        except Exception:  # noqa: BLE001
            rank = 0
        if message:
            shown = rank != 0 and _acknowledged_by_rank0(comm, message)
            if not shown:
                _write(message)
    finally:
        abort_quietly(comm, code)


def abort_quietly(comm: Any, code: int = 1) -> NoReturn:
    """Wait :data:`ABORT_GRACE_S` (the process manager forwards what was printed), then end
    every rank of ``comm``'s job: rank 0 after :class:`RankFailed`, whose message is printed,
    and :func:`end_job` after its message."""
    try:
        time.sleep(ABORT_GRACE_S)
    finally:
        try:
            comm.Abort(code)
        finally:
            # MPI_Abort may return after notifying the process manager (seen with MPICH 5):
            # make sure this rank is gone too, without running atexit handlers that would
            # finalize MPI and wait for the others.
            os._exit(code)


def receive_failure(comm: Any, source: int) -> NoReturn:
    """Rank 0: receive the failure message of rank ``source``, print it, acknowledge it and
    raise :class:`RankFailed`."""
    message, deadline = comm.recv(source=source, tag=TAG_FAILURE)
    if time.time() < deadline - ACK_MARGIN_S:
        _write(message)
        comm.isend(None, dest=source, tag=TAG_ACK)
    # else: too late for the acknowledgement, the failing rank prints it itself
    raise RankFailed(source, message)


def poll_failures(comm: Any) -> None:
    """Rank 0: :func:`receive_failure` when another rank has reported one, else return."""
    from mpi4py import MPI

    status = MPI.Status()
    if comm.Iprobe(source=MPI.ANY_SOURCE, tag=TAG_FAILURE, status=status):
        receive_failure(comm, status.Get_source())


def barrier(comm: Any, poll_s: float = 0.002) -> None:
    """``comm.Barrier()`` during which rank 0 receives the failure of a rank that will never
    arrive (:func:`poll_failures`)."""
    request = comm.Ibarrier()
    if comm.Get_rank() != 0:
        request.Wait()
        return
    while not request.Test():
        poll_failures(comm)
        time.sleep(poll_s)
