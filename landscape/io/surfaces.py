"""Whole surface files: :func:`save_surface`, :func:`load_surface`, and
:func:`surface_progress` (how far a running job is, read while it writes the file).

:func:`load_surface` also reads tomgoldstein/loss-landscape's own files and converts them.

.. note::
   loss-landscape allocates its 2D arrays as ``(nx, ny)`` but fills them through the flat
   index of ``np.meshgrid(x, y)``, which is ``(ny, nx)`` row-major; its arrays are therefore
   read here in flat order and reshaped to ``(ny, nx)``, which is right for non-square grids as
   well (loss-landscape's own plots are right only for square ones). Its ``-1`` sentinels
   become the ``done`` mask (a true loss of 0 counts as done, unlike its ``<= 0`` rule) and its
   accuracies in percent become fractions.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from landscape.grid import Surface, grid_arrays, grid_axis, grid_shape
from landscape.io import layout
from landscape.optional import import_optional


def save_surface(path: str | os.PathLike, surface: Surface, overwrite: bool = False) -> Path:
    """Write ``surface`` to ``path`` in one go (atomically: temporary file + rename).

    Raises ``FileExistsError`` if ``path`` exists and ``overwrite`` is false.
    """
    path = Path(path)
    x = grid_axis("surface.x", surface.x, layout.STORED_AXIS_ERRORS)
    y = None if surface.y is None else grid_axis("surface.y", surface.y, layout.STORED_AXIS_ERRORS)
    metrics, done = grid_arrays(surface.metrics, surface.done, grid_shape(x, y))
    indices = layout.index_arrays(surface.sample_indices)

    def fill(h5file: Any) -> None:
        layout.write_layout(
            h5file,
            x=x,
            y=y,
            metrics=metrics,
            done=done,
            provenance=dict(surface.provenance),
            sample_indices=indices,
        )

    layout.create_atomically(path, overwrite=overwrite, fill=fill)
    return path


def load_surface(path: str | os.PathLike, *, wait: float = 0.0) -> Surface:
    """Read a surface file written by landscape or by tomgoldstein/loss-landscape.

    ``wait``: seconds to wait for a process that still holds the file (HDF5's file lock) to
    let it go, e.g. right after stopping a job: an MPI launcher can return before the ranks it
    stopped have exited, and the kernel drops a dying process's lock a moment after that. With
    the default 0 a held file raises at once (the message says another process has it open).

    loss-landscape files are converted: ``-1`` sentinels (``+1`` for ``min_eig``) become NaN
    and the ``done`` mask (taken from ``train_loss``, else the first loss-like metric),
    accuracies in percent become fractions, and 2D arrays are reshaped from their flat
    ``meshgrid(x, y)`` order to ``(ny, nx)``. Their provenance holds ``dir_file`` and
    ``source_format = "loss-landscape"``.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file for a
    corrupt one (a failed ``fletcher32`` checksum, a truncated file, any error h5py raises on
    a damaged one) or an HDF5 file that is not a loss surface.
    """
    path = Path(path)
    if wait < 0:
        raise ValueError(f"wait must be >= 0 seconds, got {wait}")
    deadline = time.monotonic() + wait
    while True:
        try:
            h5file = layout.open_existing(path, "r")
        except ValueError as err:
            if not layout.is_lock_error(err.__cause__ or err) or time.monotonic() >= deadline:
                raise
            time.sleep(0.05)
            continue
        break
    with h5file, layout.reading(path):
        if "xcoordinates" not in h5file:
            raise ValueError(f"{path} is not a loss-surface file (no 'xcoordinates' dataset)")
        if "schema_version" in h5file.attrs:
            layout.check_landscape_file(h5file, path)
            return _load_landscape(h5file, path)
        return _load_loss_landscape(h5file, path)


def _load_landscape(h5file: Any, path: Path) -> Surface:
    x = np.asarray(h5file["xcoordinates"][()], dtype=np.float64)
    y = (
        np.asarray(h5file["ycoordinates"][()], dtype=np.float64)
        if "ycoordinates" in h5file
        else None
    )
    shape = grid_shape(x, y)
    metrics = {
        name: np.asarray(h5file[name][()], dtype=np.float64)
        for name in layout.metric_names(h5file, shape)
    }
    done = h5file["done"][()].astype(bool)
    if done.shape != shape:
        raise ValueError(f"{path} is damaged: 'done' has shape {done.shape}, grid is {shape}")
    provenance = layout.read_provenance(h5file)
    return Surface(
        x=x,
        y=y,
        metrics=metrics,
        done=done,
        provenance=provenance,
        sample_indices=layout.read_indices(h5file),
    )


_LOSS_LANDSCAPE_SENTINELS = {"min_eig": 1.0}
_LOSS_LANDSCAPE_DONE_KEYS = ("train_loss", "test_loss", "max_eig")


def _load_loss_landscape(h5file: Any, path: Path) -> Surface:
    x = np.asarray(h5file["xcoordinates"][()], dtype=np.float64).reshape(-1)
    y = (
        np.asarray(h5file["ycoordinates"][()], dtype=np.float64).reshape(-1)
        if "ycoordinates" in h5file
        else None
    )
    shape = grid_shape(x, y)
    stored_shapes = {shape, (x.size,) if y is None else (x.size, y.size)}
    raw = {}
    for stored_shape in stored_shapes:
        for name in layout.metric_names(h5file, stored_shape):
            # Flat (meshgrid) order -> (ny, nx), whatever shape the array was allocated with.
            raw[name] = np.asarray(h5file[name][()], dtype=np.float64).reshape(shape)
    if not raw:
        raise ValueError(f"{path} holds no metric of the grid shape {shape}")

    done_key = next((key for key in _LOSS_LANDSCAPE_DONE_KEYS if key in raw), None)
    if done_key is None:
        done_key = next((key for key in sorted(raw) if key.endswith("_loss")), sorted(raw)[0])
    sentinel = _LOSS_LANDSCAPE_SENTINELS.get(done_key, -1.0)
    done = (raw[done_key] != sentinel) & np.isfinite(raw[done_key])

    metrics = {}
    for name, values in raw.items():
        values = values.copy()
        values[~done | (values == _LOSS_LANDSCAPE_SENTINELS.get(name, -1.0))] = np.nan
        if name.endswith("_acc"):
            values = values / 100.0
        metrics[name] = values

    provenance: dict[str, Any] = {
        key: layout.plain(value)
        for key, value in h5file.attrs.items()
        if key not in layout.RESERVED_ATTRS
    }
    if "dir_file" in h5file:
        provenance["dir_file"] = layout.decode_string(h5file["dir_file"][()])
    provenance["source_format"] = "loss-landscape"
    return Surface(x=x, y=y, metrics=metrics, done=done, provenance=provenance)


class SurfaceProgress(NamedTuple):
    """How many points of a surface file are ``done``, out of ``total``."""

    done: int
    total: int

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0


def surface_progress(
    path: str | os.PathLike, *, retries: int = 5, wait_s: float = 0.05
) -> SurfaceProgress | None:
    """How far the surface in ``path`` is: ``SurfaceProgress(done, total)`` from its ``done``
    mask, or ``None`` while the file does not exist yet.

    Meant for following a job that is writing the file (``python -m landscape surface``, on one
    process or under MPI): the writer keeps the file open and HDF5's file lock refuses every
    other reader (:func:`load_surface` says so), so this reads the ``done`` mask alone, without
    the lock, read-only. The writer flushes after every chunk; a read that meets a chunk being
    flushed is retried ``retries`` times, ``wait_s`` apart, then raises the ``ValueError`` of
    :func:`load_surface` for a damaged file. Once the job has ended, load the file with
    :func:`load_surface`.
    """
    path = Path(path)
    h5py = import_optional("h5py", "reading surface files needs h5py: pip install h5py")
    for attempt in range(retries + 1):
        if not path.exists():
            return None
        try:
            with h5py.File(path, "r", locking=False) as h5file:
                if "done" not in h5file:
                    raise ValueError(f"{path} is not a landscape surface file (no 'done' mask)")
                done = np.asarray(h5file["done"][()])
            return SurfaceProgress(int(np.count_nonzero(done)), int(done.size))
        except (OSError, RuntimeError, KeyError) as err:  # h5py's errors on a half-flushed read
            if attempt == retries:
                detail = " ".join(str(err).split()) or type(err).__name__
                raise ValueError(
                    f"{path} is damaged or not a landscape surface file: {detail}"
                ) from err
            time.sleep(wait_s)
    raise AssertionError("unreachable")  # pragma: no cover
