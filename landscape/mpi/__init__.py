"""landscape under MPI: a surface over the ranks of a job, and launching a command on N ranks.

- :func:`compute_distributed` (what :func:`landscape.compute_surface` runs when given a
  communicator of more than one rank): rank 0 hands out chunks of points and writes, every rank
  evaluates (:mod:`landscape.mpi.driver`, :mod:`~landscape.mpi.dispatcher`,
  :mod:`~landscape.mpi.worker`); :func:`abort` ends the whole job when one rank fails.
- :func:`find_mpiexec`, :func:`launch_prefix`, :func:`launch_environment` and
  :func:`run_command`: the venv's own ``mpiexec`` and a ``landscape`` command on N ranks from
  Python, e.g. a demo or a notebook (:mod:`landscape.mpi.launch`); :func:`run_in_session`
  under it runs any command so that a timeout or Ctrl-C ends the whole job
  (:class:`CommandTimeout`).

- Hessian work (:mod:`landscape.mpi.curvature`): :func:`mpi_hessian_operator` (batches shared
  out, products summed by :func:`mpi_reducer`), :func:`trace_mpi` and
  :func:`spectral_density_mpi` (probes shared out, :class:`ProbeSplitOperator`); the command
  line's seam :func:`landscape.mpi.hessian_task.run_hessian_mpi` (not re-exported here: it
  reaches the eigenvalue map, which reaches :func:`landscape.compute_surface`, which imports
  this package).

mpi4py is imported only inside the functions that need it.
"""

from landscape.mpi.curvature import (
    ProbeSplitOperator,
    mpi_hessian_operator,
    mpi_reducer,
    spectral_density_mpi,
    trace_mpi,
)
from landscape.mpi.driver import abort, compute_distributed
from landscape.mpi.launch import (
    CommandTimeout,
    find_mpiexec,
    launch_environment,
    launch_prefix,
    run_command,
    run_in_session,
)

__all__ = [
    "CommandTimeout",
    "ProbeSplitOperator",
    "abort",
    "compute_distributed",
    "find_mpiexec",
    "launch_environment",
    "launch_prefix",
    "mpi_hessian_operator",
    "mpi_reducer",
    "run_command",
    "run_in_session",
    "spectral_density_mpi",
    "trace_mpi",
]
