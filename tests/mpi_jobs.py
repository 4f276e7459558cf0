"""Launching real MPI jobs from the tests: one clean environment and one launcher.

``job_environment`` is :func:`landscape.mpi.launch_environment` for two or more ranks (no
variables of an enclosing MPI job, one thread per rank, matplotlib's Agg) plus no bytecode
files and the repository (and any test folders) on ``PYTHONPATH``. ``launch`` runs a command
in a session of its own and kills the whole job (mpiexec and its ranks) when it outlives its
timeout, failing the test with what the job printed.

Import from tests as ``from tests.mpi_jobs import launch, job_environment``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from landscape.mpi import CommandTimeout, launch_environment, run_in_session

ROOT = Path(__file__).resolve().parents[1]
#: the venv's own mpiexec (pip's mpich), the one ``landscape.mpi`` launches with
MPIEXEC = Path(sys.executable).parent / "mpiexec"


def job_environment(*paths: Path | str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of an MPI job started by a test: ``paths`` (and the repository) first
    on ``PYTHONPATH``, then ``extra``."""
    env = launch_environment(2)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *map(str, paths), env.get("PYTHONPATH", "")])
    env.update(extra or {})
    return env


def launch(
    command: Sequence[str], *, cwd: Path | str, env: Mapping[str, str], timeout: float
) -> tuple[int, str, str, float]:
    """Run ``command`` to its end: ``(returncode, stdout, stderr, seconds)``. A job still
    running after ``timeout`` seconds is killed with its process group and fails the test."""
    start = time.perf_counter()
    try:
        code, stdout, stderr = run_in_session(command, env, timeout=timeout, cwd=cwd)
    except CommandTimeout as err:
        pytest.fail(
            f"{' '.join(command[:3])} ... hung for {timeout:g} s:\n{err.stdout}\n{err.stderr}"
        )
    return code, stdout, stderr, time.perf_counter() - start
