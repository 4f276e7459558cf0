"""landscape.mpi.launch: the venv's own mpiexec, the one-process fallback, running a command."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from landscape.mpi import (
    CommandTimeout,
    find_mpiexec,
    launch_environment,
    launch_prefix,
    run_command,
    run_in_session,
)


def test_launch_falls_back_to_one_process_without_mpiexec(monkeypatch, tmp_path) -> None:
    mpiexec, _ = find_mpiexec()
    prefix, processes, note = launch_prefix(2)
    if mpiexec is not None:
        assert processes == 2 and note == ""
        assert prefix[:3] == [str(mpiexec), "-n", "2"]
        assert prefix[-4:] == ["-m", "mpi4py", "-m", "landscape"]
    monkeypatch.setattr("sys.executable", str(tmp_path / "python"))  # no mpiexec next to it
    prefix, processes, note = launch_prefix(2)
    assert processes == 1 and prefix[1:] == ["-m", "landscape"]
    assert "no mpiexec" in note and "one process" in note


def test_environment_drops_an_enclosing_job_and_pins_threads(monkeypatch) -> None:
    monkeypatch.setenv("PMI_RANK", "3")
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    env = launch_environment(2)
    assert "PMI_RANK" not in env and "OMPI_COMM_WORLD_SIZE" not in env
    assert env["OMP_NUM_THREADS"] == "1" and env["MKL_NUM_THREADS"] == "1"
    assert launch_environment(1).get("OMP_NUM_THREADS") == os.environ.get("OMP_NUM_THREADS")


def test_run_command_returns_output_and_reports_failure_and_timeout() -> None:
    env = launch_environment(1)
    assert run_command([sys.executable, "-c", "print('hello')"], env, "probe") == "hello\n"
    with pytest.raises(RuntimeError, match=r"landscape probe failed \(exit status 3\)"):
        run_command([sys.executable, "-c", "import sys; print('bad'); sys.exit(3)"], env, "probe")
    with pytest.raises(RuntimeError, match="no result after 0.5 s, killed"):
        run_command(
            [sys.executable, "-c", "import time; time.sleep(30)"], env, "probe", timeout=0.5
        )


def test_run_in_session_keeps_streams_apart_and_kills_the_whole_group(tmp_path) -> None:
    env = launch_environment(1)
    script = "import os, sys; print(os.getcwd()); print('warn', file=sys.stderr); sys.exit(2)"
    code, out, err = run_in_session([sys.executable, "-c", script], env, timeout=30, cwd=tmp_path)
    assert (code, out, err) == (2, f"{tmp_path}\n", "warn\n")
    code, out, err = run_in_session(
        [sys.executable, "-c", script], env, timeout=30, cwd=tmp_path, merge_stderr=True
    )
    assert code == 2 and set(out.splitlines()) == {str(tmp_path), "warn"} and err == ""
    # A child that outlives its parent's timeout is killed with it (the group, not one pid).
    pid_file = tmp_path / "child.pid"
    parent = (
        "import subprocess, sys, time; "
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(pid_file)!r}, 'w').write(str(c.pid)); print('started', flush=True); "
        "time.sleep(60)"
    )
    with pytest.raises(CommandTimeout, match="no result after 2 s, killed") as caught:
        run_in_session([sys.executable, "-c", parent], env, timeout=2)
    assert caught.value.stdout == "started\n"
    child = int(pid_file.read_text())
    for _ in range(50):  # gone, or a zombie where nothing reaps orphans, within moments
        if not _running(child):
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the child {child} outlived the timeout")


def _running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (killed, waiting to be reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
