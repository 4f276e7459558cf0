"""Whole surface files: :func:`save_surface` and :func:`load_surface`.

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
from pathlib import Path
from typing import Any

import numpy as np

from landscape.grid import Surface, grid_arrays, grid_axis, grid_shape
from landscape.io import layout


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


def load_surface(path: str | os.PathLike) -> Surface:
    """Read a surface file written by landscape or by tomgoldstein/loss-landscape.

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
    with layout.open_existing(path, "r") as h5file, layout.reading(path):
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
