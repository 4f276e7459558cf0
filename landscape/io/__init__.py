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

Datasets are chunked, with HDF5's ``fletcher32`` checksum: a flipped byte on disk fails the
read with a ``ValueError`` naming the file (files written before the checksums read as
before). A resumed file must have been computed on the same data values (``data_sha256``).
:class:`SurfaceWriter` flushes after every :meth:`~SurfaceWriter.write`,
so a killed run loses at most the chunk of points in flight and resumes with the points not
``done``.

:func:`load_surface` also reads loss-landscape's own files and converts them
(:mod:`landscape.io.surfaces`).

The code: :mod:`~landscape.io.layout` (the constants, provenance attributes, sample indices, the
creation of a file and the checks on opening one), :mod:`~landscape.io.surfaces`
(:func:`save_surface`, :func:`load_surface`), :mod:`~landscape.io.writer`
(:class:`SurfaceWriter`), :mod:`~landscape.io.vtk` (:func:`export_vtp`) and
:mod:`~landscape.io.atomic` (:func:`atomic_write`, :func:`atomic_path`: every result file of
landscape, and of samlab, is written to a uniquely named temporary file, fsync'd and renamed)
and :mod:`~landscape.io.checkpoints` (:func:`payload_sha256`, :func:`check_checkpoint`: the
checksum samlab writes into its checkpoints and every checkpoint reader verifies).
"""

from landscape.io.atomic import AtomicWriteError, atomic_path, atomic_write
from landscape.io.checkpoints import (
    DIGEST_KEY,
    check_checkpoint,
    check_finite_weights,
    payload_sha256,
)
from landscape.io.layout import NON_IDENTITY_PROVENANCE_KEYS, SCHEMA_VERSION
from landscape.io.surfaces import (
    SurfaceProgress,
    load_surface,
    save_surface,
    surface_progress,
)
from landscape.io.vtk import export_vtp
from landscape.io.writer import SurfaceWriter

__all__ = [
    "SCHEMA_VERSION",
    "NON_IDENTITY_PROVENANCE_KEYS",
    "SurfaceWriter",
    "export_vtp",
    "load_surface",
    "save_surface",
    "surface_progress",
    "SurfaceProgress",
    "AtomicWriteError",
    "atomic_path",
    "atomic_write",
    "DIGEST_KEY",
    "check_checkpoint",
    "check_finite_weights",
    "payload_sha256",
]
