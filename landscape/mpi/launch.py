"""Launching a ``landscape`` command on N MPI ranks from Python (a demo, a notebook, a script).

Only the ``mpiexec`` next to the running interpreter is used (pip's ``mpich``, matching the
venv's ``mpi4py``): a system MPI could be another implementation than mpi4py was built for.
Ranks run as ``python -m mpi4py -m landscape ...`` so that an exception on one rank aborts the
whole job instead of leaving the others waiting, with one thread each.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["find_mpiexec", "launch_environment", "launch_prefix", "run_command"]

#: seconds a launched command may take by default; a hung MPI job is killed after this
DEFAULT_TIMEOUT = 900
#: variables of an enclosing MPI job that would confuse a nested mpiexec
_MPI_VARIABLES = ("PMI_", "OMPI_", "HYDRA_", "PMIX_", "MPIR_")


def find_mpiexec() -> tuple[Path | None, str]:
    """``(the venv's own mpiexec, "")``, or ``(None, why it cannot be used)``."""
    import importlib.util

    mpiexec = Path(sys.executable).parent / "mpiexec"
    if not (mpiexec.is_file() and os.access(mpiexec, os.X_OK)):
        return None, f"no mpiexec next to {sys.executable} (pip install mpi4py mpich)"
    if importlib.util.find_spec("mpi4py") is None:
        return None, "mpi4py is not installed (pip install mpi4py mpich)"
    return mpiexec, ""


def launch_prefix(ranks: int) -> tuple[list[str], int, str]:
    """``(command prefix up to "landscape", processes, note)`` for ``ranks`` MPI ranks.

    With ``ranks > 1`` and a usable ``mpiexec``: ``mpiexec -n RANKS python -m mpi4py -m
    landscape`` (the caller adds ``--mpi``). Otherwise ``python -m landscape`` on one process
    and a note saying why.
    """
    note = ""
    if ranks > 1:
        mpiexec, why = find_mpiexec()
        if mpiexec is not None:
            prefix = [str(mpiexec), "-n", str(ranks), sys.executable, "-m", "mpi4py"]
            return [*prefix, "-m", "landscape"], ranks, ""
        note = f"{why}: computing the landscapes on one process instead of {ranks} MPI ranks"
    return [sys.executable, "-m", "landscape"], 1, note


def launch_environment(processes: int) -> dict[str, str]:
    """This process's environment for a launch on ``processes`` ranks: without the variables
    of an enclosing MPI job, one thread per rank when there are several, matplotlib's Agg."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_MPI_VARIABLES)}
    if processes > 1:
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.setdefault("MPLBACKEND", "Agg")
    return env


def run_command(
    command: Sequence[str],
    env: Mapping[str, str],
    label: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> str:
    """Run one ``landscape`` command (on one process or under ``mpiexec``) and return its
    combined output. It runs in a session of its own, so a timeout or Ctrl-C kills mpiexec and
    its ranks together. Raises ``RuntimeError`` (with the output) when it fails or times out.
    """
    process = subprocess.Popen(
        list(command),
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        raise RuntimeError(
            f"landscape {label}: no result after {timeout:g} s, killed:\n{output}"
        ) from None
    except BaseException:  # Ctrl-C: do not leave the ranks running
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise
    if process.returncode != 0:
        raise RuntimeError(
            f"landscape {label} failed (exit status {process.returncode}):\n"
            f"  {' '.join(command)}\n{output}"
        )
    return output
