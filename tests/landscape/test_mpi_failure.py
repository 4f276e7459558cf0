"""A failing MPI rank's message reaches stderr every time (``landscape.mpi.failure``).

``mpiexec -n 2 python -m mpi4py -m landscape surface ... --mpi`` with rank 1 failing, launched
20 times (marked ``slow`` and ``mpi``; ``landscape.mpi.run_command``): the job ends with exit
status 1 and its output holds rank 1's one ``error:`` line, never a traceback, on every launch.
The launches cycle through the three places rank 1 can fail:

- a user mistake while it builds its model (a ``CLIError``): rank 0 is inside a collective
  operation and cannot listen, so rank 1 prints the message itself, then waits the grace
  period before ``MPI_Abort``;
- an exception while it builds its evaluator: rank 0 waits in the barrier before the points
  and prints the message rank 1 sends;
- an exception while it evaluates points: rank 0 dispatches and prints the message.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("h5py")

from landscape.mpi import (  # noqa: E402
    find_mpiexec,
    launch_environment,
    launch_prefix,
    run_command,
)

HERE = Path(__file__).resolve().parent
TIMEOUT = 120
LAUNCHES = 20
MPIEXEC, NO_MPIEXEC = find_mpiexec()

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


def launch(workdir: Path, index: int, model: str, extra_env: dict) -> str:
    """The output of a 2-rank launch expected to fail (``landscape.mpi.run_command``)."""
    prefix, processes, note = launch_prefix(2)
    assert processes == 2, note
    env = {**launch_environment(processes), "PYTHONDONTWRITEBYTECODE": "1", **extra_env}
    command = [*prefix, "surface", "--model", model, *COMMON, "--x", "-1:1:9", "--y", "-1:1:9"]
    command += ["--surf_file", str(workdir / f"fail{index}.h5"), "--mpi"]
    with pytest.raises(RuntimeError, match=r"failed \(exit status 1\)") as failed:
        run_command(command, env, f"launch {index}", timeout=TIMEOUT)
    return str(failed.value)


@pytest.mark.slow
@pytest.mark.mpi
@pytest.mark.skipif(MPIEXEC is None, reason=NO_MPIEXEC or "no mpiexec")
def test_failing_rank_message_reaches_stderr_every_time(tmp_path, monkeypatch):
    shutil.copy(HERE / "_factories.py", tmp_path / "_factories.py")
    monkeypatch.chdir(tmp_path)  # the factories are found from the current directory
    missing = []
    for index in range(LAUNCHES):
        model, env, needle = SCENARIOS[index % len(SCENARIOS)]
        output = launch(tmp_path, index, model, env)
        assert "Traceback" not in output, output
        lines = [line for line in output.splitlines() if "error:" in line]
        if not (len(lines) == 1 and needle in lines[0] and "rank 1" in lines[0]):
            missing.append((index, output))
    assert not missing, f"{len(missing)} of {LAUNCHES} launches lost the message: {missing[:3]}"
