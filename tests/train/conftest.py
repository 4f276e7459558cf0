"""Shared by the DDP tests: launch rank processes, fail fast with the failing rank's output."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(
    commands: Sequence[Sequence[str]],
    *,
    cwd: Path,
    envs: Sequence[dict[str, str]],
    log_dir: Path,
    timeout: float,
) -> list[str]:
    """Run one process per rank; the first that fails (or the timeout) kills the others and
    raises AssertionError with the failing rank's output. Returns each rank's output."""
    procs, logs = [], []
    for rank, (cmd, env) in enumerate(zip(commands, envs)):
        log = open(log_dir / f"rank{rank}.log", "w+b")
        logs.append(log)
        procs.append(subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT))

    def output(rank: int) -> str:
        logs[rank].flush()
        logs[rank].seek(0)
        return logs[rank].read().decode(errors="replace")

    deadline = time.monotonic() + timeout
    try:
        while True:
            codes = [p.poll() for p in procs]
            failed = [r for r, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                rank = failed[0]
                raise AssertionError(
                    f"DDP rank {rank} exited with code {codes[rank]}:\n{output(rank)}"
                )
            if all(c == 0 for c in codes):
                break
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"DDP ranks timed out after {timeout:.0f} s:\n"
                    + "\n".join(f"--- rank {r}:\n{output(r)}" for r in range(len(procs)))
                )
            time.sleep(0.05)
        return [output(r) for r in range(len(procs))]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        for log in logs:
            log.close()


@pytest.fixture(scope="session")
def ddp_runner() -> tuple[Callable[[], int], Callable[..., list[str]]]:
    """(free_port, run_ranks) for tests that launch DDP ranks."""
    return free_port, run_ranks
