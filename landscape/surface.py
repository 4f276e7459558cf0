"""Deprecated: the names of ``landscape.surface`` are importable from :mod:`landscape`.

:class:`~landscape.grid.Surface` and :func:`~landscape.grid.grid_coordinates` live in
:mod:`landscape.grid`, :func:`~landscape.compute.surface_1d` and
:func:`~landscape.compute.surface_2d` in :mod:`landscape.compute`,
:class:`~landscape.evaluate.SurfaceEvaluator` and :func:`~landscape.evaluate.as_tensors` in
:mod:`landscape.evaluate`; all of them are public names of :mod:`landscape`. This module
re-exports them for one release and warns on import.
"""

import warnings

from landscape import (
    Surface,
    SurfaceEvaluator,
    as_tensors,
    grid_coordinates,
    surface_1d,
    surface_2d,
)

__all__ = [
    "Surface",
    "SurfaceEvaluator",
    "as_tensors",
    "grid_coordinates",
    "surface_1d",
    "surface_2d",
]

warnings.warn(
    "landscape.surface is deprecated and will be removed in the next release: import Surface, "
    "SurfaceEvaluator, as_tensors, grid_coordinates, surface_1d and surface_2d from landscape",
    DeprecationWarning,
    stacklevel=2,
)
