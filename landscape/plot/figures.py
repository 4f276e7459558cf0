"""Figure files: :func:`save_figure` (one figure, written atomically) and the standard figure
set of a surface (:func:`plot_all`), as loss-landscape writes it.

One figure file per plot and format, next to the surface file: the 1D curves, or the contour,
filled contour, heat map, 3D surface (and trajectory) of a 2D surface. Every figure file is
either complete or absent (or its previous version): a kill while matplotlib writes it never
leaves a truncated PNG or PDF beside finished results.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from landscape.io.atomic import atomic_path
from landscape.plot.line import plot_1d
from landscape.plot.plane import plot_contour, plot_heatmap, plot_surface_3d, plot_trajectory


def save_figure(
    figure: Any,
    path: str | os.PathLike,
    *,
    dpi: float | None = 150,
    bbox_inches: str | None = "tight",
    format: str | None = None,
) -> Path:
    """Write ``figure`` (a matplotlib Figure) to ``path`` atomically and durably
    (:func:`landscape.io.atomic_path`); returns ``path``.

    The format is ``format`` or the path's suffix (``png``, ``pdf``, ``svg``...); ``dpi`` and
    ``bbox_inches`` as for ``Figure.savefig`` (``None``: matplotlib's defaults). The figure is
    left open. Raises ``ValueError`` for a path without a suffix and no ``format``.
    """
    path = Path(path)
    fmt = (format or path.suffix).lstrip(".")
    if not fmt:
        raise ValueError(
            f"{path}: no figure format; give the file a suffix (.png, .pdf) or format="
        )
    options: dict[str, Any] = {"format": fmt}
    if dpi is not None:
        options["dpi"] = dpi
    if bbox_inches is not None:
        options["bbox_inches"] = bbox_inches
    with atomic_path(path) as tmp:
        figure.savefig(tmp, **options)
    return path


def plot_all(
    surface: Any,
    out_prefix: str | os.PathLike,
    *,
    formats: Sequence[str] = ("png",),
    metric: str = "train_loss",
    vmin: float | None = None,
    vmax: float | None = None,
    vlevel: float | None = None,
    log: bool = False,
    loss_max: float | None = None,
    zmax: float | None = None,
    zlim: float | None = None,
    xmin: float | None = None,
    xmax: float | None = None,
    noise_floor: bool = True,
    trajectory: Any = None,
    dpi: int = 150,
) -> list[Path]:
    """Write loss-landscape's figure set for ``surface`` and return the paths.

    1D: ``<out_prefix>_1d_loss_acc[_log].<fmt>``. 2D: ``<out_prefix>_<metric>_2dcontour``,
    ``_2dcontourf``, ``_2dheat`` and ``_3dsurface`` (and ``_2dcontour_proj`` when a projected
    ``trajectory`` ``(T, 2)`` is given), one file per format in ``formats``. ``xmin``/``xmax``
    go to the 1D plot, ``zlim`` to the 3D one. A 2D surface needs at least 2 points along
    each axis (contours and 3D surfaces need cells): ``ValueError`` otherwise.
    """
    from matplotlib.figure import Figure

    if surface.y is not None and min(len(surface.x), len(surface.y)) < 2:
        raise ValueError(
            f"the figures of a 2D surface need at least 2 points along x and along y; this one "
            f"is {len(surface.x)} x {len(surface.y)} (its values are in the file)"
        )

    prefix = os.fspath(out_prefix)
    Path(prefix).parent.mkdir(parents=True, exist_ok=True)
    figures: list[tuple[str, Any]] = []

    def new(projection: str | None = None) -> Any:
        fig = Figure(figsize=(6.4, 4.8))
        return fig.add_subplot(projection=projection)

    if surface.y is None:
        ax = plot_1d(surface, ax=new(), log=log, loss_max=loss_max, xmin=xmin, xmax=xmax)
        figures.append(("_1d_loss_acc" + ("_log" if log else ""), ax.figure))
    else:
        levels = dict(vmin=vmin, vmax=vmax, vlevel=vlevel)
        base = f"_{metric}"
        ax = plot_contour(surface, metric, ax=new(), noise_floor=noise_floor, **levels)
        figures.append((base + "_2dcontour", ax.figure))
        ax = plot_heatmap(surface, metric, ax=new(), filled=True, log=log, **levels)
        figures.append((base + "_2dcontourf", ax.figure))
        ax = plot_heatmap(surface, metric, ax=new(), log=log, vmin=vmin, vmax=vmax)
        figures.append((base + "_2dheat", ax.figure))
        ax = plot_surface_3d(
            surface, metric, ax=new("3d"), log=log, zmax=zmax, zlim=zlim, vmin=vmin, vmax=vmax
        )
        figures.append((base + "_3dsurface", ax.figure))
        if trajectory is not None:
            ax = plot_trajectory(
                surface, trajectory, metric, ax=new(), noise_floor=noise_floor, **levels
            )
            figures.append((base + "_2dcontour_proj", ax.figure))

    paths = []
    for suffix, fig in figures:
        for fmt in formats:
            path = Path(f"{prefix}{suffix}.{fmt.lstrip('.')}")
            save_figure(fig, path, dpi=dpi, format=fmt)
            paths.append(path)
    return paths
