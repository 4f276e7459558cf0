"""Result files written atomically and durably: :func:`atomic_write` and :func:`atomic_path`.

A result file is either its old contents or its complete new contents, never a truncated mix,
whatever happens while it is written (a kill, a full disk, a power cut after the call
returned):

1. the new contents go to a temporary file in the same folder, named after the target with
   this process's id and a random suffix (``.NAME.PID.RANDOM.tmp``), so two runs writing the
   same file never clobber each other's temporary file;
2. the temporary file is flushed and ``fsync``'d, then renamed onto the target
   (``os.replace``, atomic within one file system);
3. the folder is ``fsync``'d, so the rename itself survives a crash.

On any failure (``ENOSPC``, an unwritable folder, an exception while filling the file) the
temporary file is removed, the target is untouched, and an :class:`AtomicWriteError` (an
``OSError``) names the file and the cause.

samlab writes its own results (checkpoints, metrics) through this helper too.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

__all__ = ["AtomicWriteError", "atomic_path", "atomic_write"]


class AtomicWriteError(OSError):
    """Writing a result file failed; the target was left as it was."""


def _temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def fsync_folder(folder: Path) -> None:
    """``fsync`` a folder, making the renames in it durable (a no-op where folders cannot be
    opened, e.g. on Windows)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError as err:  # some file systems refuse fsync on folders
        if err.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise
    finally:
        os.close(handle)


def _fsync_file(path: Path) -> None:
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _failure(path: Path, err: OSError) -> AtomicWriteError:
    cause = err.strerror or str(err)
    return AtomicWriteError(
        err.errno,
        f"cannot write {path}: {cause}; the file was left as it was (free space or choose "
        "another output location, then rerun)",
    )


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, make_parents: bool = True) -> Iterator[Path]:
    """A temporary path to fill (with any writer, e.g. ``h5py.File(tmp, "w")``) that replaces
    ``path`` atomically and durably when the ``with`` block ends without an exception.

    The writer must have closed the temporary file when the block ends. On an exception the
    temporary file is removed and ``path`` is untouched; an ``OSError`` (a full disk, an
    unwritable folder) becomes :class:`AtomicWriteError` naming ``path``.

    Example::

        with atomic_path("surface.h5") as tmp:
            with h5py.File(tmp, "w") as f:
                f.create_dataset("x", data=x)
    """
    path = Path(path)
    tmp = _temporary_name(path)
    try:
        if make_parents:
            path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
        fsync_folder(path.parent)
    except AtomicWriteError:
        raise
    except OSError as err:
        raise _failure(path, err) from err
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def atomic_write(path: str | os.PathLike, data: str | bytes, *, encoding: str = "utf-8") -> Path:
    """Write ``data`` (text in ``encoding``, or bytes) to ``path`` atomically and durably;
    returns ``path``. Raises :class:`AtomicWriteError` (``path`` untouched) on failure."""
    path = Path(path)
    payload = data.encode(encoding) if isinstance(data, str) else bytes(data)
    with atomic_path(path) as tmp:
        with open(tmp, "xb") as handle:
            handle.write(payload)
            handle.flush()
    return path
