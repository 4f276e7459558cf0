"""Refusing a grid too large for this machine before any work or file (``--x``/``--y``).

A surface of ``P`` points keeps its metrics in memory on rank 0 (the writer's arrays, the
returned :class:`~landscape.grid.Surface` and the coordinates of every point) and writes them to
the surface file. :func:`check_grid_size` estimates both from the grid alone and raises a
:class:`CLIError` naming the sizes when the memory exceeds this machine's or the file the free
space of its folder: ``--x -1:1:100000000 --y -1:1:100000000`` ends at once, not after minutes
and a half-written file.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from landscape.cli.inputs import CLIError

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")


def human_bytes(count: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    value = float(count)
    for unit in _UNITS:
        if value < 1024 or unit == _UNITS[-1]:
            return f"{value:.3g} {unit}"
        value /= 1024
    raise AssertionError  # pragma: no cover


def physical_memory() -> int | None:
    """This machine's memory in bytes (``None`` where the OS does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def free_space(path: Path) -> int | None:
    """Free bytes on the file system of ``path`` (its nearest existing folder)."""
    folder = path.absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def grid_bytes(points: int, metrics: int, ndim: int) -> tuple[int, int]:
    """``(memory, file)`` bytes of a grid of ``points`` with ``metrics`` float64 metrics: in
    memory two copies of the metrics, the ``done`` mask and the coordinates; on disk one copy
    of the metrics and ``done``."""
    memory = points * (2 * 8 * metrics + 2 + 8 * ndim)
    file = points * (8 * metrics + 1)
    return memory, file


def check_grid_size(
    x: tuple[float, float, int],
    y: tuple[float, float, int] | None,
    *,
    metrics: int,
    output: Path,
    memory: int | None = None,
    free: int | None = None,
) -> None:
    """Raise :class:`CLIError` when the grid of ``--x``/``--y`` (``MIN:MAX:NUM`` tuples) needs
    more memory than this machine has (``memory``, default the physical memory) or a larger
    file than ``output``'s folder has free space (``free``)."""
    points = int(x[2]) * (1 if y is None else int(y[2]))
    need_memory, need_file = grid_bytes(points, metrics, 1 if y is None else 2)
    memory = physical_memory() if memory is None else memory
    free = free_space(output) if free is None else free
    problems = []
    if memory is not None and need_memory > memory:
        problems.append(
            f"about {human_bytes(need_memory)} of memory (this machine has {human_bytes(memory)})"
        )
    if free is not None and need_file > free:
        problems.append(
            f"a file of about {human_bytes(need_file)} ({human_bytes(free)} free "
            f"in {output.absolute().parent})"
        )
    if problems:
        grid = f"--x NUM {x[2]}" + ("" if y is None else f" and --y NUM {y[2]}")
        raise CLIError(
            f"{grid} make {points:,} points: the surface would need {' and '.join(problems)}; "
            "use fewer points (or a coarser grid in parts)"
        )
