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

__all__ = [
    "CommandTimeout",
    "find_mpiexec",
    "launch_environment",
    "launch_prefix",
    "run_command",
    "run_in_session",
]

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


class CommandTimeout(RuntimeError):
    """A command outlived its timeout and was killed with its process group; ``stdout`` and
    ``stderr`` hold what it printed."""

    def __init__(self, timeout: float, stdout: str, stderr: str) -> None:
        super().__init__(f"no result after {timeout:g} s, killed")
        self.timeout, self.stdout, self.stderr = timeout, stdout, stderr


def run_in_session(
    command: Sequence[str],
    env: Mapping[str, str],
    *,
    timeout: float,
    cwd: str | os.PathLike | None = None,
    merge_stderr: bool = False,
) -> tuple[int, str, str]:
    """Run ``command`` to its end in a session of its own: ``(returncode, stdout, stderr)``
    (``stderr`` is ``""`` with ``merge_stderr``: it is in ``stdout``). A timeout or Ctrl-C kills
    the whole process group (``mpiexec`` and its ranks); a timeout raises
    :class:`CommandTimeout` with the output."""
    process = subprocess.Popen(
        list(command),
        cwd=cwd,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        raise CommandTimeout(timeout, stdout, stderr or "") from None
    except BaseException:  # Ctrl-C: do not leave the ranks running
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise
    return process.returncode, stdout, stderr or ""


def run_command(
    command: Sequence[str],
    env: Mapping[str, str],
    label: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> str:
    """Run one ``landscape`` command (on one process or under ``mpiexec``) and return its
    combined output. It runs in a session of its own (:func:`run_in_session`), so a timeout or
    Ctrl-C kills mpiexec and its ranks together. Raises ``RuntimeError`` (with the output) when
    it fails or times out.
    """
    try:
        code, output, _ = run_in_session(command, env, timeout=timeout, merge_stderr=True)
    except CommandTimeout as err:
        raise RuntimeError(
            f"landscape {label}: no result after {timeout:g} s, killed:\n{err.stdout}"
        ) from None
    if code != 0:
        raise RuntimeError(
            f"landscape {label} failed (exit status {code}):\n  {' '.join(command)}\n{output}"
        )
    return output
