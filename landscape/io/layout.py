"""The surface file's layout (:mod:`landscape.io`): constants, attributes, creation, checks.

:data:`SCHEMA_VERSION` and :data:`NON_IDENTITY_PROVENANCE_KEYS`; provenance stored as HDF5
attributes (JSON where not a plain scalar or string) and read back; the evaluated samples'
indices (``train_indices`` / ``test_indices``); the datasets and attributes of a new file
(:func:`write_layout`), written atomically (:func:`create_atomically`); opening an existing
file with a clear error (:func:`open_existing`) and checking that it is one written by
landscape (:func:`check_landscape_file`).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from landscape.grid import grid_shape
from landscape.io.atomic import atomic_path
from landscape.optional import import_optional

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

DATA_DIGEST_KEYS = ("data_sha256", "test_data_sha256")
"""Provenance entries holding the sha256 of the evaluated data's values
(:func:`landscape.evaluate.data_sha256`): identity, with a message of their own when they
differ, and stamped into a file written before they existed (:class:`SurfaceWriter`)."""
DATA_DIGEST_SCHEME_KEY = "data_digest"
"""Provenance entry naming the definition of the data digests
(:data:`landscape.evaluate.DATA_DIGEST_SCHEME`). A file without it was written before: its
digests (none, or an eigenvalue map's older batch-wise one) are not compared but replaced by
this run's, once."""

INDEX_SETS = ("train", "test")  # Surface.sample_indices keys -> "<name>_indices" datasets
RESERVED_DATASETS = frozenset(
    {"xcoordinates", "ycoordinates", "done", "dir_file"} | {f"{n}_indices" for n in INDEX_SETS}
)
RESERVED_ATTRS = frozenset({"schema_version", "acc_units", "provenance_json_keys"})
_INT64 = np.iinfo(np.int64)
_NUMPY_SCALARS = ((np.bool_, bool), (np.integer, int), (np.floating, float))
_NEEDS_H5PY = "landscape.io needs h5py to read and write surface files: pip install h5py"
#: dataset options of a new file: chunked with HDF5's ``fletcher32`` checksum filter (it needs
#: chunks), so a flipped byte in the coordinates, a metric, ``done`` or the indices fails the
#: read (an ``OSError`` that :func:`reading` reports naming the file) instead of giving a wrong
#: value. Files written without it read as before.
CHECKSUMMED: dict[str, Any] = {"chunks": True, "fletcher32": True}
#: how coordinates that cannot be stored are reported (see :func:`landscape.grid.grid_axis`)
STORED_AXIS_ERRORS = (
    "{name} must be a non-empty 1D array, got shape {shape}",
    "{name} must be finite",
)


# --------------------------------------------------------------------------------------------
# grid and provenance helpers
# --------------------------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """``value`` with numpy scalars/arrays, tuples and paths turned into JSON-able Python."""
    for numpy_type, python_type in _NUMPY_SCALARS:
        if isinstance(value, numpy_type):
            return python_type(value)
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def canonical(value: Any) -> str:
    """A string that is equal for equal provenance values (key order ignored)."""
    return json.dumps(plain(value), sort_keys=True)


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
        if key in RESERVED_ATTRS:
            raise ValueError(f"provenance key {key!r} is reserved by the surface file format")
        value = plain(value)
        if _is_native_attr(value):
            h5file.attrs[key] = value
        else:
            h5file.attrs[key] = json.dumps(value)
            json_keys.append(key)
    h5file.attrs["provenance_json_keys"] = json.dumps(json_keys)


def read_provenance(h5file: Any) -> dict[str, Any]:
    """The provenance stored in a surface file's attributes (JSON ones decoded)."""
    json_keys = set(json.loads(plain(h5file.attrs.get("provenance_json_keys", "[]"))))
    provenance = {}
    for key, value in h5file.attrs.items():
        if key in RESERVED_ATTRS:
            continue
        value = plain(value)
        provenance[key] = json.loads(value) if key in json_keys else value
    return provenance


def identity_keys(provenance: Mapping[str, Any]) -> set[str]:
    """The provenance keys a resumed file must match (see :data:`NON_IDENTITY_PROVENANCE_KEYS`)."""
    return {
        key
        for key in provenance
        if key not in NON_IDENTITY_PROVENANCE_KEYS
        and not key.endswith(("version", "versions"))
        and key not in RESERVED_ATTRS
    }


def metric_names(h5file: Any, shape: tuple[int, ...]) -> list[str]:
    """Names of the metric datasets: every dataset of the grid shape but the reserved ones."""
    h5py = import_optional("h5py", _NEEDS_H5PY)
    return [
        name
        for name, item in h5file.items()
        if name not in RESERVED_DATASETS and isinstance(item, h5py.Dataset) and item.shape == shape
    ]


def decode_string(value: Any) -> str:
    """A string dataset or attribute (bytes, a 0-d array, ...) as ``str``."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        value = value.item() if value.size == 1 else value.tolist()
        return decode_string(value)
    return str(value)


def index_arrays(sample_indices: Mapping[str, Any] | None) -> dict[str, np.ndarray]:
    """``sample_indices`` checked: keys among ``INDEX_SETS``, values 1-D int64 arrays."""
    arrays = {}
    for name, values in dict(sample_indices or {}).items():
        if name not in INDEX_SETS:
            raise ValueError(f"sample_indices keys must be in {INDEX_SETS}, got {name!r}")
        array = np.asarray(values)
        if array.ndim != 1 or not (array.size == 0 or np.issubdtype(array.dtype, np.integer)):
            raise ValueError(f"sample_indices[{name!r}] must be a 1-D integer array")
        arrays[name] = array.astype(np.int64)
    return arrays


def _write_indices(h5file: Any, sample_indices: Mapping[str, np.ndarray]) -> None:
    for name, array in sample_indices.items():
        h5file.create_dataset(f"{name}_indices", data=array, dtype=np.int64, **CHECKSUMMED)


def read_indices(h5file: Any) -> dict[str, np.ndarray]:
    """The evaluated samples' indices stored in a surface file, by evaluation set."""
    return {
        name: np.asarray(h5file[f"{name}_indices"][()], dtype=np.int64)
        for name in INDEX_SETS
        if f"{name}_indices" in h5file
    }


# --------------------------------------------------------------------------------------------
# file creation
# --------------------------------------------------------------------------------------------


def write_layout(
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
    shape = grid_shape(x, y)
    h5file.create_dataset("xcoordinates", data=x, **CHECKSUMMED)
    if y is not None:
        h5file.create_dataset("ycoordinates", data=y, **CHECKSUMMED)
    for name, values in metrics.items():
        if name in RESERVED_DATASETS:
            raise ValueError(f"metric name {name!r} is reserved by the surface file format")
        h5file.create_dataset(
            name,
            shape=shape,
            dtype=np.float64,
            data=values,
            fillvalue=np.nan,
            **CHECKSUMMED,
        )
    h5file.create_dataset(
        "done",
        shape=shape,
        dtype=np.uint8,
        data=None if done is None else done.astype(np.uint8),
        fillvalue=0,
        **CHECKSUMMED,
    )
    dir_file = plain(provenance.get("dir_file", ""))
    h5file.create_dataset("dir_file", data=str(dir_file))
    _write_indices(h5file, sample_indices or {})
    _write_provenance(h5file, provenance)
    h5file.attrs["schema_version"] = SCHEMA_VERSION
    h5file.attrs["acc_units"] = "fraction"


def create_atomically(path: Path, overwrite: bool, fill: Any) -> None:
    """Write a new file next to ``path`` with ``fill(h5file)``, then rename it onto ``path``
    (:func:`landscape.io.atomic.atomic_path`: fsync'd, unique temporary name)."""
    h5py = import_optional("h5py", _NEEDS_H5PY)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as h5file:
            fill(h5file)


#: the text of HDF5's error when another process holds the file's lock (``H5Fopen``:
#: "unable to lock file, errno = 11, ..."); matched exactly, since HDF5's other messages
#: contain "lock" too (a truncated file: "truncated file: eof = ..., sblock->base_addr = ...")
HDF5_LOCK_MESSAGE = "unable to lock file"


def is_lock_error(err: BaseException) -> bool:
    """Whether ``err`` is HDF5's "another process holds this file's lock" error."""
    return HDF5_LOCK_MESSAGE in str(err).lower()


def open_existing(path: Path, mode: str) -> Any:
    """The h5py file at ``path``; a missing, locked or unreadable file raises a clear error."""
    h5py = import_optional("h5py", _NEEDS_H5PY)
    if not path.is_file():
        raise FileNotFoundError(f"surface file {path} does not exist")
    try:
        return h5py.File(path, mode)
    except Exception as err:  # noqa: BLE001 - h5py raises OSError, RuntimeError, ...
        detail = " ".join(str(err).split()) or type(err).__name__
        if is_lock_error(err):
            raise ValueError(
                f"{path} is open in another process (HDF5 file lock): wait for that run to "
                f"finish, or stop it, then retry ({detail})"
            ) from err
        if "truncated file" in detail:
            raise ValueError(
                f"{path} is truncated (an interrupted copy or a full disk?); HDF5: {detail}"
            ) from err
        raise ValueError(
            f"{path} is not a readable HDF5 file (corrupt or truncated?): {detail}"
        ) from err


@contextlib.contextmanager
def reading(path: Path) -> Iterator[None]:
    r"""Report any failure while reading the surface file ``path`` as one ``ValueError`` naming
    it: h5py raises ``OSError`` (a failed ``fletcher32`` checksum), ``RuntimeError``,
    ``KeyError``, ... on a damaged file, and decoded values can fail the grid's checks.
    ``ValueError``\ s that already name ``path`` pass unchanged."""
    try:
        yield
    except ValueError as err:
        if str(path) in str(err):
            raise
        raise _damaged(path, err) from err
    except (FileNotFoundError, KeyboardInterrupt):
        raise
    except Exception as err:  # noqa: BLE001 - whatever a damaged file makes h5py raise
        raise _damaged(path, err) from err


def _damaged(path: Path, err: BaseException) -> ValueError:
    detail = " ".join(str(err).split()) or type(err).__name__
    # A failed fletcher32 check reads "filter returned failure during read" (HDF5 1.14).
    if "checksum" in detail.lower() or "filter returned failure" in detail.lower():
        return ValueError(
            f"{path} is damaged: a dataset's data fail their checksum (a flipped byte on "
            f"disk or in a copy); HDF5: {detail}"
        )
    return ValueError(f"{path} is damaged or not a landscape surface file: {detail}")


def check_landscape_file(h5file: Any, path: Path) -> None:
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
