"""landscape under MPI: launching a command on N ranks from Python."""

from landscape.mpi.launch import find_mpiexec, launch_environment, launch_prefix, run_command

__all__ = ["find_mpiexec", "launch_environment", "launch_prefix", "run_command"]
