"""A failing MPI rank's message reaches stderr every time (``landscape.mpi.failure``).

``mpiexec -n 2 python -m mpi4py -m landscape surface ... --mpi`` with rank 1 failing, launched
20 times (marked ``slow`` and ``mpi``): the job ends with exit status 1 and stderr holds rank
1's one ``error:`` line, never a traceback, on every launch. The launches cycle through the
three places rank 1 can fail:

- a user mistake while it builds its model (a ``CLIError``): rank 0 is inside a collective
  operation and cannot listen, so rank 1 prints the message itself, then waits the grace
  period before ``MPI_Abort``;
- an exception while it builds its evaluator: rank 0 waits in the barrier before the points
  and prints the message rank 1 sends;
- an exception while it evaluates points: rank 0 dispatches and prints the message.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("h5py")

HERE = Path(__file__).resolve().parent
MPIEXEC = Path(sys.executable).parent / "mpiexec"
TIMEOUT = 120
LAUNCHES = 20

try:
    import mpi4py  # noqa: F401

    _NO_MPI = None if MPIEXEC.exists() else f"no mpiexec next to {sys.executable} (pip mpich)"
except ImportError:  # pragma: no cover - the dev extra installs mpi4py
    _NO_MPI = "mpi4py is not installed (pip install mpi4py mpich)"

COMMON = ["--data", "_factories:data", "--batch_size", "64", "--no_progress"]
#: (model factory, environment, the message rank 1's line must hold)
SCENARIOS = [
    (
        "_factories:rank1_not_a_model",
        {},
        "[rank 1] error: --model _factories:rank1_not_a_model: the factory returned str",
    ),
    (
        "_factories:cnn",
        # the factory's own forward is the first; the evaluator's probes come next
        {"LANDSCAPE_TEST_RAISE_AFTER": "1", "LANDSCAPE_TEST_RANK": "1"},
        "error: RuntimeError: injected failure after 1 forward passes",
    ),
    (
        "_factories:cnn",
        {
            "LANDSCAPE_TEST_RAISE_AFTER": "40",
            "LANDSCAPE_TEST_RANK": "1",
            "LANDSCAPE_TEST_SLEEP": "0.002",
        },
        "error: RuntimeError: injected failure after 40 forward passes",
    ),
]


def launch(workdir: Path, index: int, model: str, extra_env: dict) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "HYDRA_"))}
    env.update({"OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "PYTHONDONTWRITEBYTECODE": "1"})
    env.update(extra_env)
    surf = workdir / f"fail{index}.h5"
    command = [str(MPIEXEC), "-n", "2", sys.executable, "-m", "mpi4py", "-m", "landscape"]
    command += ["surface", "--model", model, *COMMON, "--x", "-1:1:9", "--y", "-1:1:9"]
    command += ["--surf_file", str(surf), "--mpi"]
    process = subprocess.Popen(
        command,
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, stderr = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"launch {index} hung for {TIMEOUT} s")
    return process.returncode, stderr


@pytest.mark.slow
@pytest.mark.mpi
@pytest.mark.skipif(_NO_MPI is not None, reason=str(_NO_MPI))
def test_failing_rank_message_reaches_stderr_every_time(tmp_path):
    shutil.copy(HERE / "_factories.py", tmp_path / "_factories.py")
    missing = []
    for index in range(LAUNCHES):
        model, env, needle = SCENARIOS[index % len(SCENARIOS)]
        code, stderr = launch(tmp_path, index, model, env)
        assert code != 0, f"launch {index}: exit status 0\n{stderr}"
        assert "Traceback" not in stderr, stderr
        lines = [line for line in stderr.splitlines() if "error:" in line]
        if not (len(lines) == 1 and needle in lines[0] and "rank 1" in lines[0]):
            missing.append((index, stderr))
    assert not missing, f"{len(missing)} of {LAUNCHES} launches lost the message: {missing[:3]}"
