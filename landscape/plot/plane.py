"""The 2D plots of :mod:`landscape.plot`: contours, heat maps, 3D surfaces and trajectories.

:func:`plot_contour` (labelled levels, the ones below the noise floor dashed),
:func:`plot_heatmap` (an image or filled contours, linear or log colours),
:func:`plot_surface_3d` and :func:`plot_trajectory` (a projected path over the contour), with
the colour scale (:func:`_color_norm`) and the axis labels and title (:func:`_finish_axes`) they
share. matplotlib is imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from landscape.plot.grid import (
    FAINT_COLOR,
    axis_labels,
    contour_levels,
    finite_values,
    metric_grid,
    new_axes,
    pretty,
    se_floor,
    split_levels,
    value_range,
)

# --------------------------------------------------------------------------------------------
# 2D
# --------------------------------------------------------------------------------------------


def _color_norm(low: float, high: float, log: bool = False) -> Any:
    """The colour scale from ``low`` to ``high``: logarithmic when ``log``, else linear."""
    from matplotlib.colors import LogNorm, Normalize

    return LogNorm(vmin=low, vmax=high) if log else Normalize(vmin=low, vmax=high)


def plot_contour(
    surface: Any,
    metric: str = "train_loss",
    *,
    x: Any = None,
    y: Any = None,
    se: Any = None,
    levels: Sequence[float] | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    vlevel: float | None = None,
    cmap: str = "viridis",
    noise_floor: bool = True,
    clabel: bool = True,
    ax: Any = None,
    title: str | None = None,
) -> Any:
    """Labelled contour lines of a 2D surface (loss-landscape's ``_2dcontour``).

    Levels are ``levels`` or ``np.arange(vmin, vmax, vlevel)``. With ``noise_floor`` and a
    standard error (``<metric>_se`` in the surface, or ``se``), levels closer than twice the
    median standard error to the previous solid level are drawn dashed and grey and a legend
    entry names the floor.

    ``surface`` may also be a ``(ny, nx)`` array with coordinates ``x`` and ``y``.
    """
    grid = metric_grid(surface, metric, x=x, y=y, se=se, ndim=2)
    ax = new_axes(ax)
    from matplotlib.lines import Line2D

    all_levels = contour_levels(grid.z, vmin, vmax, vlevel, levels)
    floor = float("nan")
    if noise_floor:
        floor = se_floor(surface, metric, grid.se)
    solid, faint = split_levels(all_levels, floor)
    norm = _color_norm(all_levels.min(), all_levels.max()) if all_levels.size else None
    z = np.ma.masked_invalid(grid.z)
    if solid.size:
        contours = ax.contour(grid.x, grid.y, z, levels=solid, cmap=cmap, norm=norm)
        if clabel and contours.levels.size:
            ax.clabel(contours, inline=True, fontsize=8)
    if faint.size:
        ax.contour(
            grid.x,
            grid.y,
            z,
            levels=faint,
            colors=FAINT_COLOR,
            linestyles="--",
            linewidths=0.6,
        )
        ax.legend(
            handles=[
                Line2D(
                    [],
                    [],
                    color=FAINT_COLOR,
                    linestyle="--",
                    linewidth=0.6,
                    label=f"below noise floor (2×median SE = {floor:.3g})",
                )
            ],
            loc="upper right",
            fontsize=8,
        )
    _finish_axes(ax, surface, title=pretty(metric) if title is None else title)
    return ax


def _finish_axes(
    ax: Any,
    surface: Any,
    *,
    title: str | None = None,
    zlabel: str | None = None,
    explained_variance_ratio: Any = None,
) -> None:
    """Label the x and y axes (with the PCA explained variance when known, else "x" and "y")
    and, when given, the z axis of a 3D Axes and the title."""
    xlabel, ylabel = axis_labels(surface, explained_variance_ratio)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if zlabel is not None:
        ax.set_zlabel(zlabel)
    if title is not None:
        ax.set_title(title)


def plot_heatmap(
    surface: Any,
    metric: str = "train_loss",
    *,
    x: Any = None,
    y: Any = None,
    cmap: str = "viridis",
    levels: Sequence[float] | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    vlevel: float | None = None,
    filled: bool = False,
    log: bool = False,
    colorbar: bool = True,
    ax: Any = None,
    title: str | None = None,
) -> Any:
    """Heat map (``filled=False``: one cell per grid point, loss-landscape's ``_2dheat``) or
    filled contours (``filled=True``, its ``_2dcontourf``, levels as :func:`plot_contour`).

    Colours span ``[vmin, vmax]`` (data range by default), on a log scale when ``log``.
    """
    grid = metric_grid(surface, metric, x=x, y=y, ndim=2)
    ax = new_axes(ax)
    z = np.ma.masked_invalid(grid.z)
    finite = finite_values(grid.z)
    if filled:
        all_levels = contour_levels(grid.z, vmin, vmax, vlevel, levels)
        if log:
            positive = finite[finite > 0]
            low = all_levels[all_levels > 0].min() if np.any(all_levels > 0) else positive.min()
            high = max(all_levels.max(), low * 10)
            all_levels = np.geomspace(low, high, max(all_levels.size, 2))
        else:
            low, high = all_levels.min(), all_levels.max()
        norm = _color_norm(low, high, log)
        if all_levels.size < 2:
            all_levels = np.array([all_levels[0], all_levels[0] + 1e-12])
        mappable = ax.contourf(
            grid.x, grid.y, z, levels=all_levels, cmap=cmap, norm=norm, extend="both"
        )
    else:
        low, high = value_range(finite, vmin, vmax)
        if log:
            positive = finite[finite > 0]
            if low <= 0:
                low = float(positive.min()) if positive.size else 1e-12
            high = max(high, low)
        norm = _color_norm(low, high, log)
        mappable = ax.pcolormesh(grid.x, grid.y, z, cmap=cmap, norm=norm, shading="nearest")
    if colorbar:
        ax.figure.colorbar(mappable, ax=ax, label=pretty(metric))
    _finish_axes(ax, surface, title=pretty(metric) if title is None else title)
    return ax


def plot_trajectory(
    surface: Any,
    path: Any,
    metric: str = "train_loss",
    *,
    ax: Any = None,
    explained_variance_ratio: Sequence[float] | None = None,
    contour: bool = True,
    color: str = "C3",
    label: str = "trajectory",
    **contour_options: Any,
) -> Any:
    """A projected training path ``(T, 2)`` over the contour of ``surface`` (may be ``None``).

    The start is marked with a circle and the end with a star. The axes are labelled with the
    PCA explained variance (``explained_variance_ratio`` or the surface's direction meta) when
    known.

    .. note::
       The contour is the loss on the plane through the final model; the loss of the
       checkpoints along the path need not equal the contour value under them.
    """
    path = np.asarray(path, dtype=np.float64)
    if path.ndim != 2 or path.shape[1] != 2:
        raise ValueError(f"path must have shape (T, 2), got {path.shape}")
    ax = new_axes(ax)
    if surface is not None and contour:
        plot_contour(surface, metric, ax=ax, **contour_options)
    ax.plot(path[:, 0], path[:, 1], marker=".", color=color, label=label, linewidth=1)
    ax.plot(path[0, 0], path[0, 1], marker="o", color=color, linestyle="none")
    ax.plot(path[-1, 0], path[-1, 1], marker="*", markersize=12, color=color, linestyle="none")
    _finish_axes(ax, surface, explained_variance_ratio=explained_variance_ratio)
    return ax


def plot_surface_3d(
    surface: Any,
    metric: str = "train_loss",
    *,
    x: Any = None,
    y: Any = None,
    zmax: float | None = None,
    zlim: float | None = None,
    log: bool = False,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = "coolwarm",
    colorbar: bool = True,
    ax: Any = None,
    title: str | None = None,
) -> Any:
    """3D surface (loss-landscape's ``_3dsurface``) on a ``projection="3d"`` Axes.

    ``zmax`` clips the values, ``log`` plots ``log(z + 0.1)``; ``vmin``/``vmax`` set the colour
    limits; ``zlim`` is the upper limit of the z axis (in the plotted units, so of
    ``log(z + 0.1)`` with ``log``; loss-landscape's ``--zlim``, which it never applies). A
    new figure gets its Axes from ``fig.add_subplot(projection="3d")`` (the ``Axes3D(fig)``
    of loss-landscape draws nothing on matplotlib >= 3.6).
    """
    grid = metric_grid(surface, metric, x=x, y=y, ndim=2)
    if ax is not None and getattr(ax, "name", "") != "3d":
        raise ValueError("plot_surface_3d needs an Axes made with projection='3d'")
    ax = new_axes(ax, projection="3d")
    z = grid.z.copy()
    if zmax is not None:
        z = np.where(z > zmax, zmax, z)
    zlabel = pretty(metric)
    if log:
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.log(z + 0.1)
        zlabel = f"log({zlabel} + 0.1)"
    finite_values(z)
    grid_x, grid_y = np.meshgrid(grid.x, grid.y)
    mappable = ax.plot_surface(
        grid_x,
        grid_y,
        np.ma.masked_invalid(z),
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        linewidth=0,
        antialiased=False,
    )
    if zlim is not None:
        low = float(np.nanmin(z))
        ax.set_zlim(low if low < zlim else zlim - 1.0, float(zlim))
    if colorbar:
        ax.figure.colorbar(mappable, ax=ax, shrink=0.5, aspect=10, pad=0.1)
    _finish_axes(ax, surface, title=pretty(metric) if title is None else title, zlabel=zlabel)
    return ax
