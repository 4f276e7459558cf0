"""The incremental, resumable writer of one surface file (:class:`SurfaceWriter`).

Creates a file or re-opens one to resume, after checking that its grid, metric names,
identity provenance and evaluated samples are this run's; writes chunks of points, their
``done`` flags, and flushes after each. The file's layout is :mod:`landscape.io.layout`'s.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from landscape.evaluate import hash_indices
from landscape.grid import Surface, grid_axis, grid_shape
from landscape.io import layout


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
        self.shape = grid_shape(self.x, self.y)
        self.metric_names = tuple(layout.metric_names(h5file, self.shape))
        self._metrics = {name: h5file[name][()] for name in self.metric_names}
        self._done = h5file["done"][()].astype(bool)
        self.sample_indices = layout.read_indices(h5file)
        #: data digests recorded now in a file written before they were stored (see ``open``)
        self.stamped: list[str] = []

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
        :attr:`SurfaceEvaluator.sample_indices <landscape.evaluate.SurfaceEvaluator>`): the
        indices of the evaluated samples where a subset is used, stored as the int64 datasets
        ``train_indices`` / ``test_indices``; a resumed file must hold the same ones (a file
        written before they were stored gains them when its recorded sha256 matches).

        - no file, or ``overwrite=True``: a new file (metrics NaN, ``done`` 0) replaces it;
        - an existing landscape file with the same ``x``, ``y``, metric names and identity
          provenance (every entry but :data:`NON_IDENTITY_PROVENANCE_KEYS` and versions):
          re-opened, its ``done`` points kept;
        - any difference raises ``ValueError`` naming the differing key and suggesting
          ``--overwrite``; a corrupt or foreign HDF5 file raises ``ValueError`` naming it.
        - the data digests (:data:`~landscape.io.layout.DATA_DIGEST_KEYS`, a sha256 of the
          evaluated samples' values) must match too: resuming on other data is refused with
          a message saying so. A file written before the digests were stored is accepted once
          and stamped with this run's digests (listed in :attr:`stamped`).

        An existing file is never replaced without ``overwrite=True``.
        """
        path = Path(path)
        x = grid_axis("x", x, layout.STORED_AXIS_ERRORS)
        y = None if y is None else grid_axis("y", y, layout.STORED_AXIS_ERRORS)
        names = tuple(metric_names)
        if not names:
            raise ValueError("metric_names must not be empty")
        if len(set(names)) != len(names):
            raise ValueError(f"metric_names has duplicates: {names}")
        provenance = dict(provenance)
        indices = layout.index_arrays(sample_indices)

        if overwrite or not path.exists():

            def fill(h5file: Any) -> None:
                layout.write_layout(
                    h5file,
                    x=x,
                    y=y,
                    metrics={name: None for name in names},
                    done=None,
                    provenance=provenance,
                    sample_indices=indices,
                )

            layout.create_atomically(path, overwrite=True, fill=fill)
            return cls._opened(layout.open_existing(path, "r+"), path)

        h5file = layout.open_existing(path, "r+")
        try:
            with layout.reading(path):
                layout.check_landscape_file(h5file, path)
                cls._check_resumable(h5file, path, x=x, y=y, names=names, provenance=provenance)
                cls._check_indices(h5file, path, indices)
                stamped = cls._stamp_digests(h5file, provenance)
            writer = cls._opened(h5file, path)
            writer.stamped = stamped
            return writer
        except BaseException:
            h5file.close()
            raise

    @classmethod
    def _opened(cls, h5file: Any, path: Path) -> SurfaceWriter:
        """The writer of the open ``h5file`` (closed again when reading it fails)."""
        try:
            with layout.reading(path):
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
        shape = grid_shape(x, y)
        stored_names = sorted(layout.metric_names(h5file, shape))
        if h5file["done"].shape != shape:
            raise ValueError(f"{path} is damaged: 'done' has shape {h5file['done'].shape}")
        if stored_names != sorted(names):
            raise mismatch("metric_names", stored_names, sorted(names))

        stored = layout.read_provenance(h5file)
        scheme = layout.DATA_DIGEST_SCHEME_KEY
        # Digests comparable with this run's: same definition (a file without the scheme was
        # written before the digests of values existed: any digest it holds is of another kind).
        comparable = scheme in stored and stored[scheme] == provenance.get(scheme)
        for key in sorted(layout.identity_keys(stored) | layout.identity_keys(provenance)):
            if key == scheme and key in provenance and key not in stored:
                continue  # stamped after the checks
            if key in layout.DATA_DIGEST_KEYS and key in provenance:
                if comparable and key in stored and stored[key] != provenance[key]:
                    raise ValueError(
                        f"cannot resume {path}: it was computed on other data values "
                        f"({key} of the file {str(stored[key])[:12]}..., of this run "
                        f"{str(provenance[key])[:12]}...): the data changed since (a data "
                        "factory or file returning other samples); pass --overwrite "
                        "(overwrite=True) to recompute the surface on this data, or write a "
                        "new file (another --surf_file)"
                    )
                continue  # a file written before data digests: stamped after the checks
            if key not in stored:
                raise mismatch(key, "<missing>", provenance[key])
            if key not in provenance:
                raise mismatch(key, stored[key], "<missing>")
            if layout.canonical(stored[key]) != layout.canonical(provenance[key]):
                raise mismatch(
                    key, layout.canonical(stored[key]), layout.canonical(provenance[key])
                )

    @staticmethod
    def _stamp_digests(h5file: Any, provenance: Mapping[str, Any]) -> list[str]:
        """Record this run's data digests in a file written before they were stored (accepted
        once: from then on a resume must match them); returns the keys stamped."""
        stamped = []
        scheme = layout.DATA_DIGEST_SCHEME_KEY
        if scheme not in provenance or scheme in h5file.attrs:
            return stamped
        for key in (*layout.DATA_DIGEST_KEYS, scheme):
            if key in provenance:
                h5file.attrs[key] = str(provenance[key])
                stamped.append(key)
        if stamped:
            h5file.flush()
        return stamped

    @staticmethod
    def _check_indices(h5file: Any, path: Path, indices: dict[str, np.ndarray]) -> None:
        """The file's evaluated-sample indices must be this run's; a file without them (older
        landscape) gains them when the sha256 it recorded is theirs."""
        stored = layout.read_indices(h5file)
        hint = "use --overwrite (overwrite=True) to start a new surface"
        for name in layout.INDEX_SETS:
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
            if recorded is None or layout.plain(recorded) != hash_indices(indices[name]):
                raise ValueError(
                    f"cannot resume {path}: it does not record {key!r} and its recorded "
                    f"sha256 is not that of this run's {name} samples; {hint}"
                )
            h5file.create_dataset(key, data=indices[name], dtype=np.int64, **layout.CHECKSUMMED)

    # -- state ------------------------------------------------------------------------------

    @property
    def ndim(self) -> int:
        """1 or 2."""
        return 1 if self.y is None else 2

    @property
    def size(self) -> int:
        """The number of grid points."""
        return int(np.prod(self.shape))

    @property
    def done(self) -> np.ndarray:
        """Copy of the ``done`` mask (bool, grid shape)."""
        return self._done.copy()

    def todo(self) -> np.ndarray:
        """Flat indices (``k = i * nx + j``, int64, ascending) of the points not done."""
        return np.flatnonzero(~self._done.reshape(-1)).astype(np.int64)

    def surface(self) -> Surface:
        """The current contents as a :class:`~landscape.grid.Surface` (NaN where not done)."""
        self._require_open()
        return Surface(
            x=self.x.copy(),
            y=None if self.y is None else self.y.copy(),
            metrics={name: values.copy() for name, values in self._metrics.items()},
            done=self._done.copy(),
            provenance=layout.read_provenance(self._file),
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
        """Close the file (idempotent)."""
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
