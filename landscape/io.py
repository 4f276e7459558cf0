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
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from landscape._surface_data import _hash_indices
from landscape.surface import Surface

__all__ = [
    "SCHEMA_VERSION",
    "NON_IDENTITY_PROVENANCE_KEYS",
    "SurfaceWriter",
    "export_vtp",
    "load_surface",
    "save_surface",
]

SCHEMA_VERSION = 1
"""Version of the HDF5 layout written by this module (attribute ``schema_version``)."""

NON_IDENTITY_PROVENANCE_KEYS = frozenset(
    {
        "batch_size",
        "mode",
        "mode_requested",
        "execution",
        "points_per_call",
        "cudnn_allow_tf32",
        "matmul_allow_tf32",
        "device",
        "dir_file",
        "hostname",
        "created",
        "command",
        "chunk_size",
        "nproc",
        "ranks",
    }
)
"""Provenance entries that may differ when a run resumes (with every ``*version(s)`` key).

They describe how the points were computed (batch size, evaluation mode and its details,
device, paths, versions), not which surface. Every other entry (direction meta and hash,
``dir_type``, model hash and class, data subset and its hash, loss, BatchNorm mode, dtype, ...)
is identity: a resumed file must match it exactly.
"""

_COORD_KEYS = ("xcoordinates", "ycoordinates")
_INDEX_SETS = ("train", "test")  # Surface.sample_indices keys -> "<name>_indices" datasets
_RESERVED_DATASETS = frozenset(
    {"xcoordinates", "ycoordinates", "done", "dir_file"} | {f"{n}_indices" for n in _INDEX_SETS}
)
_RESERVED_ATTRS = frozenset({"schema_version", "acc_units", "provenance_json_keys"})
_INT64 = np.iinfo(np.int64)


def _h5py():
    try:
        import h5py
    except ImportError as err:  # pragma: no cover - h5py is a dependency
        raise ImportError(
            "landscape.io needs h5py to read and write surface files: pip install h5py"
        ) from err
    return h5py


# --------------------------------------------------------------------------------------------
# grid and provenance helpers
# --------------------------------------------------------------------------------------------


def _coordinates(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1D array, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite")
    return array


def _grid_shape(x: np.ndarray, y: np.ndarray | None) -> tuple[int, ...]:
    return (x.size,) if y is None else (y.size, x.size)


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars/arrays, tuples and paths turned into JSON-able Python."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def _canonical(value: Any) -> str:
    """A string that is equal for equal provenance values (key order ignored)."""
    return json.dumps(_plain(value), sort_keys=True)


def _is_native_attr(value: Any) -> bool:
    if isinstance(value, (bool, str, float)):
        return True
    if isinstance(value, int):
        return _INT64.min <= value <= _INT64.max
    return False


def _write_provenance(h5file: Any, provenance: Mapping[str, Any]) -> None:
    json_keys = []
    for key, value in provenance.items():
        if not isinstance(key, str):
            raise ValueError(f"provenance keys must be strings, got {key!r}")
        if key in _RESERVED_ATTRS:
            raise ValueError(f"provenance key {key!r} is reserved by the surface file format")
        value = _plain(value)
        if _is_native_attr(value):
            h5file.attrs[key] = value
        else:
            h5file.attrs[key] = json.dumps(value)
            json_keys.append(key)
    h5file.attrs["provenance_json_keys"] = json.dumps(json_keys)


def _attr_value(value: Any) -> Any:
    return _plain(value)


def _read_provenance(h5file: Any) -> dict[str, Any]:
    json_keys = set(json.loads(_attr_value(h5file.attrs.get("provenance_json_keys", "[]"))))
    provenance = {}
    for key, value in h5file.attrs.items():
        if key in _RESERVED_ATTRS:
            continue
        value = _attr_value(value)
        provenance[key] = json.loads(value) if key in json_keys else value
    return provenance


def _identity_keys(provenance: Mapping[str, Any]) -> set[str]:
    return {
        key
        for key in provenance
        if key not in NON_IDENTITY_PROVENANCE_KEYS
        and not key.endswith(("version", "versions"))
        and key not in _RESERVED_ATTRS
    }


def _metric_names(h5file: Any, shape: tuple[int, ...]) -> list[str]:
    """Names of the metric datasets: every dataset of the grid shape but the reserved ones."""
    h5py = _h5py()
    return [
        name
        for name, item in h5file.items()
        if name not in _RESERVED_DATASETS and isinstance(item, h5py.Dataset) and item.shape == shape
    ]


def _decode_string(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        value = value.item() if value.size == 1 else value.tolist()
        return _decode_string(value)
    return str(value)


def _index_arrays(sample_indices: Mapping[str, Any] | None) -> dict[str, np.ndarray]:
    """``sample_indices`` checked: keys among ``_INDEX_SETS``, values 1-D int64 arrays."""
    arrays = {}
    for name, values in dict(sample_indices or {}).items():
        if name not in _INDEX_SETS:
            raise ValueError(f"sample_indices keys must be in {_INDEX_SETS}, got {name!r}")
        array = np.asarray(values)
        if array.ndim != 1 or not (array.size == 0 or np.issubdtype(array.dtype, np.integer)):
            raise ValueError(f"sample_indices[{name!r}] must be a 1-D integer array")
        arrays[name] = array.astype(np.int64)
    return arrays


def _write_indices(h5file: Any, sample_indices: Mapping[str, np.ndarray]) -> None:
    for name, array in sample_indices.items():
        h5file.create_dataset(f"{name}_indices", data=array, dtype=np.int64)


def _read_indices(h5file: Any) -> dict[str, np.ndarray]:
    return {
        name: np.asarray(h5file[f"{name}_indices"][()], dtype=np.int64)
        for name in _INDEX_SETS
        if f"{name}_indices" in h5file
    }


# --------------------------------------------------------------------------------------------
# file creation
# --------------------------------------------------------------------------------------------


def _write_layout(
    h5file: Any,
    *,
    x: np.ndarray,
    y: np.ndarray | None,
    metrics: Mapping[str, np.ndarray | None],
    done: np.ndarray | None,
    provenance: Mapping[str, Any],
    sample_indices: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Coordinates, metric datasets (NaN-filled where ``None``), ``done``, the evaluated
    samples' indices and attributes."""
    shape = _grid_shape(x, y)
    h5file.create_dataset("xcoordinates", data=x)
    if y is not None:
        h5file.create_dataset("ycoordinates", data=y)
    for name, values in metrics.items():
        if name in _RESERVED_DATASETS:
            raise ValueError(f"metric name {name!r} is reserved by the surface file format")
        h5file.create_dataset(
            name,
            shape=shape,
            dtype=np.float64,
            data=values,
            chunks=True,
            fillvalue=np.nan,
        )
    h5file.create_dataset(
        "done",
        shape=shape,
        dtype=np.uint8,
        data=None if done is None else done.astype(np.uint8),
        chunks=True,
        fillvalue=0,
    )
    dir_file = _plain(provenance.get("dir_file", ""))
    h5file.create_dataset("dir_file", data=str(dir_file))
    _write_indices(h5file, sample_indices or {})
    _write_provenance(h5file, provenance)
    h5file.attrs["schema_version"] = SCHEMA_VERSION
    h5file.attrs["acc_units"] = "fraction"


def _create_atomically(path: Path, overwrite: bool, fill: Any) -> None:
    """Write a new file next to ``path`` with ``fill(h5file)``, then rename it onto ``path``."""
    h5py = _h5py()
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        with h5py.File(tmp_name, "w") as h5file:
            fill(h5file)
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise


def _open_existing(path: Path, mode: str) -> Any:
    h5py = _h5py()
    if not path.is_file():
        raise FileNotFoundError(f"surface file {path} does not exist")
    try:
        return h5py.File(path, mode)
    except OSError as err:
        if "lock" in str(err).lower():
            raise ValueError(
                f"{path} is open in another process (HDF5 file lock): wait for that run to "
                f"finish, or stop it, then retry ({err})"
            ) from err
        raise ValueError(
            f"{path} is not a readable HDF5 file (corrupt or truncated?): {err}"
        ) from err


def _check_landscape_file(h5file: Any, path: Path) -> None:
    """Raise ``ValueError`` naming ``path`` unless it is a surface file written by this module."""
    if "xcoordinates" not in h5file:
        raise ValueError(f"{path} is not a loss-surface file (no 'xcoordinates' dataset)")
    if "schema_version" not in h5file.attrs or "done" not in h5file:
        raise ValueError(
            f"{path} was not written by landscape (no schema_version/done; a loss-landscape "
            "file?) and cannot be resumed; use --overwrite (overwrite=True) to replace it"
        )
    version = int(h5file.attrs["schema_version"])
    if version > SCHEMA_VERSION:
        raise ValueError(
            f"{path} has schema_version {version}, newer than this landscape "
            f"({SCHEMA_VERSION}); upgrade landscape"
        )


# --------------------------------------------------------------------------------------------
# SurfaceWriter
# --------------------------------------------------------------------------------------------


class SurfaceWriter:
    """Incremental, resumable writer of one surface file (rank 0 only under MPI).

    Use :meth:`open`; then :meth:`todo` gives the flat indices still to compute and
    :meth:`write` stores a chunk of results, sets their ``done`` flags and flushes the file.

    Example::

        with SurfaceWriter.open(path, x=x, y=y, metric_names=names, provenance=prov) as w:
            for chunk in np.array_split(w.todo(), 10):
                w.write(chunk, evaluator.evaluate_points(coords[chunk]))
    """

    def __init__(self, h5file: Any, path: Path) -> None:
        self._file = h5file
        self.path = path
        self.x = np.asarray(h5file["xcoordinates"][()], dtype=np.float64)
        self.y = (
            np.asarray(h5file["ycoordinates"][()], dtype=np.float64)
            if "ycoordinates" in h5file
            else None
        )
        self.shape = _grid_shape(self.x, self.y)
        self.metric_names = tuple(_metric_names(h5file, self.shape))
        self._metrics = {name: h5file[name][()] for name in self.metric_names}
        self._done = h5file["done"][()].astype(bool)
        self.sample_indices = _read_indices(h5file)

    # -- opening ----------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        *,
        x: Any,
        y: Any | None,
        metric_names: Iterable[str],
        provenance: Mapping[str, Any],
        overwrite: bool = False,
        sample_indices: Mapping[str, Any] | None = None,
    ) -> SurfaceWriter:
        """Create ``path``, or re-open it to resume when grid and identity provenance match.

        ``sample_indices`` (``{"train": ..., "test": ...}``, e.g.
        :attr:`SurfaceEvaluator.sample_indices <landscape.surface.SurfaceEvaluator>`): the
        indices of the evaluated samples where a subset is used, stored as the int64 datasets
        ``train_indices`` / ``test_indices``; a resumed file must hold the same ones (a file
        written before they were stored gains them when its recorded sha256 matches).

        - no file, or ``overwrite=True``: a new file (metrics NaN, ``done`` 0) replaces it;
        - an existing landscape file with the same ``x``, ``y``, metric names and identity
          provenance (every entry but :data:`NON_IDENTITY_PROVENANCE_KEYS` and versions):
          re-opened, its ``done`` points kept;
        - any difference raises ``ValueError`` naming the differing key and suggesting
          ``--overwrite``; a corrupt or foreign HDF5 file raises ``ValueError`` naming it.

        An existing file is never replaced without ``overwrite=True``.
        """
        path = Path(path)
        x = _coordinates(x, "x")
        y = None if y is None else _coordinates(y, "y")
        names = tuple(metric_names)
        if not names:
            raise ValueError("metric_names must not be empty")
        if len(set(names)) != len(names):
            raise ValueError(f"metric_names has duplicates: {names}")
        provenance = dict(provenance)
        indices = _index_arrays(sample_indices)

        if overwrite or not path.exists():

            def fill(h5file: Any) -> None:
                _write_layout(
                    h5file,
                    x=x,
                    y=y,
                    metrics={name: None for name in names},
                    done=None,
                    provenance=provenance,
                    sample_indices=indices,
                )

            _create_atomically(path, overwrite=True, fill=fill)
            return cls(_open_existing(path, "r+"), path)

        h5file = _open_existing(path, "r+")
        try:
            _check_landscape_file(h5file, path)
            cls._check_resumable(h5file, path, x=x, y=y, names=names, provenance=provenance)
            cls._check_indices(h5file, path, indices)
            return cls(h5file, path)
        except BaseException:
            h5file.close()
            raise

    @staticmethod
    def _check_resumable(
        h5file: Any,
        path: Path,
        *,
        x: np.ndarray,
        y: np.ndarray | None,
        names: tuple[str, ...],
        provenance: dict[str, Any],
    ) -> None:
        def mismatch(key: str, stored: Any, wanted: Any) -> ValueError:
            return ValueError(
                f"cannot resume {path}: {key!r} differs (file: {stored!s:.200}, this run: "
                f"{wanted!s:.200}); use --overwrite (overwrite=True) to start a new surface"
            )

        stored_x = h5file["xcoordinates"][()]
        if stored_x.shape != x.shape or not np.array_equal(stored_x, x):
            raise mismatch("xcoordinates", _describe(stored_x), _describe(x))
        stored_y = h5file["ycoordinates"][()] if "ycoordinates" in h5file else None
        if (stored_y is None) != (y is None):
            raise mismatch("ycoordinates", _describe(stored_y), _describe(y))
        if y is not None and (stored_y.shape != y.shape or not np.array_equal(stored_y, y)):
            raise mismatch("ycoordinates", _describe(stored_y), _describe(y))
        shape = _grid_shape(x, y)
        stored_names = sorted(_metric_names(h5file, shape))
        if h5file["done"].shape != shape:
            raise ValueError(f"{path} is damaged: 'done' has shape {h5file['done'].shape}")
        if stored_names != sorted(names):
            raise mismatch("metric_names", stored_names, sorted(names))

        stored = _read_provenance(h5file)
        for key in sorted(_identity_keys(stored) | _identity_keys(provenance)):
            if key not in stored:
                raise mismatch(key, "<missing>", provenance[key])
            if key not in provenance:
                raise mismatch(key, stored[key], "<missing>")
            if _canonical(stored[key]) != _canonical(provenance[key]):
                raise mismatch(key, _canonical(stored[key]), _canonical(provenance[key]))

    @staticmethod
    def _check_indices(h5file: Any, path: Path, indices: dict[str, np.ndarray]) -> None:
        """The file's evaluated-sample indices must be this run's; a file without them (older
        landscape) gains them when the sha256 it recorded is theirs."""
        stored = _read_indices(h5file)
        hint = "use --overwrite (overwrite=True) to start a new surface"
        for name in _INDEX_SETS:
            key = f"{name}_indices"
            if name in stored and name not in indices:
                raise ValueError(
                    f"cannot resume {path}: it was computed on a subset of {name} samples "
                    f"({key}, {stored[name].size} of them), this run on all of them; {hint}"
                )
            if name not in indices:
                continue
            if name in stored:
                if not np.array_equal(stored[name], indices[name]):
                    raise ValueError(
                        f"cannot resume {path}: {key!r} differs (file: {stored[name].size} "
                        f"indices, this run: {indices[name].size}, not the same samples); {hint}"
                    )
                continue
            recorded = h5file.attrs.get(f"{key}_sha256")
            if recorded is None or _attr_value(recorded) != _hash_indices(indices[name]):
                raise ValueError(
                    f"cannot resume {path}: it does not record {key!r} and its recorded "
                    f"sha256 is not that of this run's {name} samples; {hint}"
                )
            h5file.create_dataset(key, data=indices[name], dtype=np.int64)

    # -- state ------------------------------------------------------------------------------

    @property
    def ndim(self) -> int:
        return 1 if self.y is None else 2

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def done(self) -> np.ndarray:
        """Copy of the ``done`` mask (bool, grid shape)."""
        return self._done.copy()

    def todo(self) -> np.ndarray:
        """Flat indices (``k = i * nx + j``, int64, ascending) of the points not done."""
        return np.flatnonzero(~self._done.reshape(-1)).astype(np.int64)

    def surface(self) -> Surface:
        """The current contents as a :class:`~landscape.surface.Surface` (NaN where not done)."""
        self._require_open()
        return Surface(
            x=self.x.copy(),
            y=None if self.y is None else self.y.copy(),
            metrics={name: values.copy() for name, values in self._metrics.items()},
            done=self._done.copy(),
            provenance=_read_provenance(self._file),
            sample_indices={name: array.copy() for name, array in self.sample_indices.items()},
        )

    # -- writing ----------------------------------------------------------------------------

    def write(self, indices: Any, metrics: Mapping[str, Any]) -> None:
        """Store ``metrics[name][m]`` at flat index ``indices[m]``, mark them done and flush."""
        self._require_open()
        indices = np.asarray(indices)
        if indices.ndim != 1 or not (indices.size == 0 or np.issubdtype(indices.dtype, np.integer)):
            raise ValueError(
                f"indices must be a 1D integer array, got {indices.dtype} {indices.shape}"
            )
        if indices.size == 0:
            return
        if indices.min() < 0 or indices.max() >= self.size:
            raise ValueError(f"indices out of range [0, {self.size}) for grid {self.shape}")
        missing = set(self.metric_names) - set(metrics)
        unknown = set(metrics) - set(self.metric_names)
        if missing or unknown:
            raise ValueError(
                f"metrics must have exactly the file's metric names {sorted(self.metric_names)}; "
                f"missing {sorted(missing)}, unknown {sorted(unknown)}"
            )
        values = {}
        for name in self.metric_names:
            array = np.asarray(metrics[name], dtype=np.float64).reshape(-1)
            if array.shape != indices.shape:
                raise ValueError(
                    f"metric {name!r} has {array.size} values for {indices.size} indices"
                )
            values[name] = array

        for name, array in values.items():
            self._metrics[name].reshape(-1)[indices] = array
        self._done.reshape(-1)[indices] = True

        # Write back the smallest block of rows (2D) or elements (1D) holding the chunk.
        row_length = self.shape[-1] if self.ndim == 2 else 1
        first, last = int(indices.min()) // row_length, int(indices.max()) // row_length + 1
        block = slice(first, last)
        for name in self.metric_names:
            self._file[name][block] = self._metrics[name][block]
        self._file["done"][block] = self._done[block].astype(np.uint8)
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _require_open(self) -> None:
        if self._file is None:
            raise ValueError(f"SurfaceWriter for {self.path} is closed")

    def __enter__(self) -> SurfaceWriter:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._file is None else f"{int(self._done.sum())}/{self.size} done"
        return f"SurfaceWriter({str(self.path)!r}, shape={self.shape}, {state})"


def _describe(coords: np.ndarray | None) -> str:
    if coords is None:
        return "none (1D)"
    if coords.size == 0:
        return "[]"
    return f"[{coords[0]:g}, {coords[-1]:g}, {coords.size}]"


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


# --------------------------------------------------------------------------------------------
# VTK
# --------------------------------------------------------------------------------------------


def export_vtp(
    surface: Surface,
    path: str | os.PathLike,
    *,
    metric: str = "train_loss",
    zmax: float | None = None,
    log: bool = False,
    interp: int | None = None,
) -> Path:
    """Write a 2D surface as VTK XML PolyData (``.vtp``) for ParaView, like ``h52vtp.py``.

    Points are ``(x[j], y[i], z[i, j])`` in flat (``meshgrid``) order with ``z`` also stored
    as a point scalar named after ``metric``; cells are the grid's quads (``(ny-1)(nx-1)``
    of them) with the mean of their corners as a cell scalar. Processing order as
    loss-landscape: optional upsampling to ``interp`` points per side (cubic
    ``scipy.interpolate.RegularGridInterpolator``; needs a complete surface and at least 4
    points per side), then clipping at ``zmax``, then ``z -> log(z + 0.1)`` when ``log``.
    Points that are not done are left out, with every quad touching them.
    """
    if surface.y is None:
        raise ValueError("export_vtp needs a 2D surface")
    if metric not in surface.metrics:
        raise KeyError(f"metric {metric!r} not in surface (have {sorted(surface.metrics)})")
    x = np.asarray(surface.x, dtype=np.float64)
    y = np.asarray(surface.y, dtype=np.float64)
    z = np.asarray(surface.metrics[metric], dtype=np.float64).copy()
    z[~np.asarray(surface.done, dtype=bool)] = np.nan

    if interp is not None and interp > 0:
        x, y, z = _upsample(x, y, z, int(interp))
    if zmax is not None and zmax > 0:
        z = np.where(z > zmax, zmax, z)
    if log:
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.log(z + 0.1)

    ny, nx = z.shape
    grid_x, grid_y = np.meshgrid(x, y)
    valid = np.isfinite(z).reshape(-1)
    # Quads (k, k+1, k+nx+1, k+nx) for the lower-left corner k = i * nx + j.
    corner = (np.arange(ny - 1)[:, None] * nx + np.arange(nx - 1)[None, :]).reshape(-1)
    quads = np.stack([corner, corner + 1, corner + nx + 1, corner + nx], axis=1)
    quads = quads[valid[quads].all(axis=1)]
    # Renumber the points that are kept.
    new_index = np.cumsum(valid) - 1
    points = np.stack([grid_x.reshape(-1), grid_y.reshape(-1), z.reshape(-1)], axis=1)[valid]
    quad_values = z.reshape(-1)[quads].mean(axis=1) if quads.size else np.empty(0)
    quads = new_index[quads]

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n_points, n_polys = len(points), len(quads)
    scalar_name = metric + ("_log" if log else "")
    parts = [
        '<?xml version="1.0"?>\n',
        '<VTKFile type="PolyData" version="1.0" byte_order="LittleEndian" header_type="UInt64">\n',
        "  <PolyData>\n",
        f'    <Piece NumberOfPoints="{n_points}" NumberOfVerts="0" NumberOfLines="0" '
        f'NumberOfStrips="0" NumberOfPolys="{n_polys}">\n',
        f'      <PointData Scalars="{scalar_name}">\n',
        _data_array("Float64", scalar_name, 1, points[:, 2]),
        "      </PointData>\n",
        f'      <CellData Scalars="averaged {scalar_name}">\n',
        _data_array("Float64", f"averaged {scalar_name}", 1, quad_values),
        "      </CellData>\n",
        "      <Points>\n",
        _data_array("Float64", "Points", 3, points.reshape(-1)),
        "      </Points>\n",
        "      <Polys>\n",
        _data_array("Int64", "connectivity", 1, quads.reshape(-1)),
        _data_array("Int64", "offsets", 1, 4 * np.arange(1, n_polys + 1)),
        "      </Polys>\n",
        "    </Piece>\n",
        "  </PolyData>\n",
        "</VTKFile>\n",
    ]
    path.write_text("".join(parts))
    return path


def _data_array(vtk_type: str, name: str, components: int, values: np.ndarray) -> str:
    values = np.asarray(values)
    if vtk_type.startswith("Int"):
        text = " ".join(str(int(v)) for v in values)
    else:
        text = " ".join(repr(float(v)) for v in values)
    range_attrs = ""
    if values.size:
        # Plain Python numbers: ``repr`` of a numpy 2 scalar is "np.float64(...)", not a number.
        if vtk_type.startswith("Int"):
            low, high = int(values.min()), int(values.max())
        else:
            low, high = float(values.min()), float(values.max())
        range_attrs = f' RangeMin="{low!r}" RangeMax="{high!r}"'
    return (
        f'        <DataArray type="{vtk_type}" Name="{name}" NumberOfComponents="{components}"'
        f' format="ascii"{range_attrs}>\n          {text}\n        </DataArray>\n'
    )


def _upsample(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, points_per_side: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cubic upsampling of ``z`` ``(ny, nx)`` to ``points_per_side`` points along each axis."""
    try:
        from scipy.interpolate import RegularGridInterpolator
    except ImportError as err:  # pragma: no cover - scipy comes with scikit-learn
        raise ImportError("export_vtp(interp=...) needs scipy: pip install scipy") from err
    if not np.all(np.isfinite(z)):
        raise ValueError("interp needs a complete surface (some points are not done)")
    if min(z.shape) < 4:
        raise ValueError(f"cubic interpolation needs at least 4 points per side, grid is {z.shape}")
    if points_per_side < 2:
        raise ValueError(f"interp must be at least 2, got {points_per_side}")
    # RegularGridInterpolator wants ascending coordinates.
    x_order, y_order = np.argsort(x), np.argsort(y)
    x, y, z = x[x_order], y[y_order], z[np.ix_(y_order, x_order)]
    interpolator = RegularGridInterpolator((y, x), z, method="cubic")
    new_x = np.linspace(x[0], x[-1], points_per_side)
    new_y = np.linspace(y[0], y[-1], points_per_side)
    grid_y, grid_x = np.meshgrid(new_y, new_x, indexing="ij")
    new_z = interpolator(np.stack([grid_y.reshape(-1), grid_x.reshape(-1)], axis=1))
    return new_x, new_y, new_z.reshape(points_per_side, points_per_side)
