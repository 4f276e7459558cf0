"""One run per folder: ``fcntl.flock`` on an open lock file.

:func:`run_folder_lock` holds an exclusive lock on ``FOLDER/.lock`` for a whole run (a seed
folder ``seed_S/``); a second run into the same folder is refused at once with a message naming
the process that holds it. :func:`short_lock` waits for a lock around a brief update shared by
several runs (the aggregate ``metrics.json`` / ``results.csv`` of an output folder). The kernel
releases a ``flock`` when its process dies, so a killed run leaves nothing to clean up; the lock
files themselves stay (empty but for the holder's process id) and are harmless.

POSIX only (``fcntl``); where it is missing (Windows) the locks are no-ops.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["FolderBusyError", "LOCK_NAME", "run_folder_lock", "short_lock"]

#: the lock file of a run folder
LOCK_NAME = ".lock"


class FolderBusyError(FileExistsError):
    """Another process is running in this folder (a ``FileExistsError``: the run folder is
    taken)."""


def _fcntl():
    try:
        import fcntl
    except ImportError:  # Windows
        return None
    return fcntl


@contextlib.contextmanager
def run_folder_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold ``folder/.lock`` exclusively for the ``with`` block (the folder is created);
    :class:`FolderBusyError` at once when another process holds it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fcntl = _fcntl()
    with open(path, "a+") as handle:
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "unknown"
                raise FolderBusyError(
                    f"{folder} is in use by another run (process {holder}); wait for it to end "
                    "or choose another output folder"
                ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield path
        finally:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def short_lock(path: str | os.PathLike) -> Iterator[None]:
    """Wait for an exclusive lock on the file ``path`` (created) for a brief update."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fcntl = _fcntl()
    with open(path, "a") as handle:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
