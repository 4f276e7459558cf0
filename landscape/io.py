"""Loss surfaces in HDF5, with tomgoldstein/loss-landscape's key names, and VTK export.

Layout of a surface file written here (``schema_version`` 1):

- ``xcoordinates`` ``(nx,)`` and, for 2D, ``ycoordinates`` ``(ny,)``, float64;
- one float64 dataset per metric (``train_loss``, ``train_acc``, ``train_loss_se``,
  ``test_loss``, ``train_mae``, ...) of the grid shape: ``(nx,)`` in 1D, ``(ny, nx)`` in 2D with
  element ``[i, j]`` at ``(x[j], y[i])`` (flat index ``k = i * nx + j``, ``np.meshgrid(x, y)``
  order). NaN where a point is not done; accuracy is a fraction in ``[0, 1]``;
- ``done`` (uint8, grid shape): 1 where every metric of the point has been written;
- ``dir_file``: the direction file's path, a string dataset (as loss-landscape writes it);
- ``train_indices`` (and ``test_indices``), int64: the indices of the evaluated samples when
  a subset was used (:attr:`Surface.sample_indices`), next to their sha256 in the attributes;
  a resumed run must evaluate the same ones;
- attributes: one per provenance entry (strings and numbers as they are, anything else as
  JSON, the JSON-encoded names listed in ``provenance_json_keys``), ``schema_version`` and
  ``acc_units = "fraction"``.

Datasets are chunked; :class:`SurfaceWriter` flushes after every :meth:`~SurfaceWriter.write`,
so a killed run loses at most the chunk of points in flight and resumes with the points not
``done``.

:func:`load_surface` also reads loss-landscape's own files and converts them.

.. note::
   loss-landscape allocates its 2D arrays as ``(nx, ny)`` but fills them through the flat
   index of ``np.meshgrid(x, y)``, which is ``(ny, nx)`` row-major; its arrays are therefore
   read here in flat order and reshaped to ``(ny, nx)``, which is right for non-square grids as
   well (loss-landscape's own plots are right only for square ones). Its ``-1`` sentinels
   become the ``done`` mask (a true loss of 0 counts as done, unlike its ``<= 0`` rule) and its
   accuracies in percent become fractions.

The code: this module holds :func:`save_surface` and :func:`load_surface` (with the reading of
loss-landscape's files); the file layout, the constants and the shared helpers
(``_io_format.py``), :class:`SurfaceWriter` (``_io_writer.py``) and :func:`export_vtp`
(``_io_vtk.py``) are defined in private modules beside it and re-exported here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

# Defined in the private modules, importable from here as before (the private helpers are the
# ones this module uses).
from landscape._io_format import (
    _RESERVED_ATTRS,
    _attr_value,
    _check_landscape_file,
    _coordinates,
    _create_atomically,
    _decode_string,
    _grid_shape,
    _index_arrays,
    _metric_names,
    _open_existing,
    _read_indices,
    _read_provenance,
    _write_layout,
)
from landscape._io_format import NON_IDENTITY_PROVENANCE_KEYS as NON_IDENTITY_PROVENANCE_KEYS
from landscape._io_format import SCHEMA_VERSION as SCHEMA_VERSION
from landscape._io_vtk import export_vtp as export_vtp
from landscape._io_writer import SurfaceWriter as SurfaceWriter
from landscape.surface import Surface

__all__ = [
    "SCHEMA_VERSION",
    "NON_IDENTITY_PROVENANCE_KEYS",
    "SurfaceWriter",
    "export_vtp",
    "load_surface",
    "save_surface",
]


# --------------------------------------------------------------------------------------------
# save / load
# --------------------------------------------------------------------------------------------


def save_surface(path: str | os.PathLike, surface: Surface, overwrite: bool = False) -> Path:
    """Write ``surface`` to ``path`` in one go (atomically: temporary file + rename).

    Raises ``FileExistsError`` if ``path`` exists and ``overwrite`` is false.
    """
    path = Path(path)
    x = _coordinates(surface.x, "surface.x")
    y = None if surface.y is None else _coordinates(surface.y, "surface.y")
    shape = _grid_shape(x, y)
    metrics = {}
    for name, values in surface.metrics.items():
        array = np.asarray(values, dtype=np.float64)
        if array.shape != shape:
            raise ValueError(f"metric {name!r} has shape {array.shape}, grid is {shape}")
        metrics[name] = array
    done = np.asarray(surface.done, dtype=bool)
    if done.shape != shape:
        raise ValueError(f"done has shape {done.shape}, grid is {shape}")
    indices = _index_arrays(surface.sample_indices)

    def fill(h5file: Any) -> None:
        _write_layout(
            h5file,
            x=x,
            y=y,
            metrics=metrics,
            done=done,
            provenance=dict(surface.provenance),
            sample_indices=indices,
        )

    _create_atomically(path, overwrite=overwrite, fill=fill)
    return path


def load_surface(path: str | os.PathLike) -> Surface:
    """Read a surface file written by landscape or by tomgoldstein/loss-landscape.

    loss-landscape files are converted: ``-1`` sentinels (``+1`` for ``min_eig``) become NaN
    and the ``done`` mask (taken from ``train_loss``, else the first loss-like metric),
    accuracies in percent become fractions, and 2D arrays are reshaped from their flat
    ``meshgrid(x, y)`` order to ``(ny, nx)``. Their provenance holds ``dir_file`` and
    ``source_format = "loss-landscape"``.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file for a
    corrupt one or an HDF5 file that is not a loss surface.
    """
    path = Path(path)
    with _open_existing(path, "r") as h5file:
        if "xcoordinates" not in h5file:
            raise ValueError(f"{path} is not a loss-surface file (no 'xcoordinates' dataset)")
        if "schema_version" in h5file.attrs:
            _check_landscape_file(h5file, path)
            return _load_landscape(h5file, path)
        return _load_loss_landscape(h5file, path)


def _load_landscape(h5file: Any, path: Path) -> Surface:
    x = np.asarray(h5file["xcoordinates"][()], dtype=np.float64)
    y = (
        np.asarray(h5file["ycoordinates"][()], dtype=np.float64)
        if "ycoordinates" in h5file
        else None
    )
    shape = _grid_shape(x, y)
    metrics = {
        name: np.asarray(h5file[name][()], dtype=np.float64)
        for name in _metric_names(h5file, shape)
    }
    done = h5file["done"][()].astype(bool)
    if done.shape != shape:
        raise ValueError(f"{path} is damaged: 'done' has shape {done.shape}, grid is {shape}")
    provenance = _read_provenance(h5file)
    return Surface(
        x=x,
        y=y,
        metrics=metrics,
        done=done,
        provenance=provenance,
        sample_indices=_read_indices(h5file),
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
    shape = _grid_shape(x, y)
    stored_shapes = {shape, (x.size,) if y is None else (x.size, y.size)}
    raw = {}
    for stored_shape in stored_shapes:
        for name in _metric_names(h5file, stored_shape):
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
        key: _attr_value(value) for key, value in h5file.attrs.items() if key not in _RESERVED_ATTRS
    }
    if "dir_file" in h5file:
        provenance["dir_file"] = _decode_string(h5file["dir_file"][()])
    provenance["source_format"] = "loss-landscape"
    return Surface(x=x, y=y, metrics=metrics, done=done, provenance=provenance)
