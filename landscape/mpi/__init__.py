"""landscape under MPI: a surface over the ranks of a job, and launching a command on N ranks.

- :func:`compute_distributed` (what :func:`landscape.compute_surface` runs when given a
  communicator of more than one rank): rank 0 hands out chunks of points and writes, every rank
  evaluates (:mod:`landscape.mpi.driver`, :mod:`~landscape.mpi.dispatcher`,
  :mod:`~landscape.mpi.worker`); :func:`abort` ends the whole job when one rank fails.
- :func:`find_mpiexec`, :func:`launch_prefix`, :func:`launch_environment` and
  :func:`run_command`: the venv's own ``mpiexec`` and a ``landscape`` command on N ranks from
  Python, e.g. a demo or a notebook (:mod:`landscape.mpi.launch`).

mpi4py is imported only inside the functions that need it.
"""

from landscape.mpi.driver import abort, compute_distributed
from landscape.mpi.launch import find_mpiexec, launch_environment, launch_prefix, run_command

__all__ = [
    "abort",
    "compute_distributed",
    "find_mpiexec",
    "launch_environment",
    "launch_prefix",
    "run_command",
]
