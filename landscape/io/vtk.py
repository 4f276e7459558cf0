"""VTK XML PolyData (``.vtp``) export of a 2D surface for ParaView (:func:`export_vtp`), like
tomgoldstein/loss-landscape's ``h52vtp.py``; ``scipy`` is imported only for ``interp``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from landscape.io.atomic import atomic_write

if TYPE_CHECKING:  # pragma: no cover
    from landscape.grid import Surface


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
    atomic_write(path, "".join(parts))
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
