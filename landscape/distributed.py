"""Deprecated: the names of ``landscape.distributed`` are importable from :mod:`landscape`.

:func:`~landscape.compute.compute_surface` and :func:`~landscape.compute.format_rank_report`
live in :mod:`landscape.compute` (the MPI driver in :mod:`landscape.mpi`); both are public
names of :mod:`landscape`. This module re-exports them for one release and warns on import.
"""

import warnings

from landscape import compute_surface, format_rank_report

__all__ = ["compute_surface", "format_rank_report"]

warnings.warn(
    "landscape.distributed is deprecated and will be removed in the next release: import "
    "compute_surface and format_rank_report from landscape",
    DeprecationWarning,
    stacklevel=2,
)
