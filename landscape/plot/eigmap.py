"""Plots of a Hessian eigenvalue map (:class:`~landscape.curvature.eigmap.EigenMap`).

- :func:`plot_eig_ratio`: the heat map of ``|min_eig / max_eig|``, as loss-landscape's
  ``plot_2D.plot_2d_eig_ratio`` draws it (colours over ``[0, 0.5]`` by default): near 0 the
  loss is locally convex (the negative curvature is small next to the positive one);
- :func:`plot_max_eig`: contour lines of ``max_eig`` (the sharpness over the plane).

A 1-D map is drawn as curves against ``x``. Both take the map (anything with ``to_surface()``
returning a :class:`~landscape.grid.Surface` holding ``max_eig``, ``min_eig`` and ``eig_ratio``),
draw on ``ax`` (a new figure when ``None``) and return the Axes.
"""

from __future__ import annotations

from typing import Any

from landscape.plot.grid import new_axes
from landscape.plot.plane import plot_contour, plot_heatmap


def _line(surface: Any, metric: str, label: str, ax: Any, title: str | None) -> Any:
    ax = new_axes(ax)
    ax.plot(surface.x, surface.metrics[metric], label=label)
    ax.set_xlabel("x")
    ax.set_ylabel(label)
    ax.set_title(title or label)
    return ax


def plot_eig_ratio(
    eigmap: Any,
    *,
    vmin: float = 0.0,
    vmax: float = 0.5,
    cmap: str = "viridis",
    ax: Any = None,
    title: str | None = None,
) -> Any:
    """Heat map of ``|min_eig / max_eig|`` over the grid (a curve for a 1-D map)."""
    surface = eigmap.to_surface()
    title = title or "|min_eig / max_eig|"
    if surface.y is None:
        return _line(surface, "eig_ratio", "|min_eig / max_eig|", ax, title)
    return plot_heatmap(surface, "eig_ratio", vmin=vmin, vmax=vmax, cmap=cmap, ax=ax, title=title)


def plot_max_eig(
    eigmap: Any,
    *,
    levels: Any = None,
    cmap: str = "viridis",
    ax: Any = None,
    title: str | None = None,
) -> Any:
    """Contour lines of ``max_eig`` over the grid (a curve for a 1-D map)."""
    surface = eigmap.to_surface()
    title = title or "max_eig (largest Hessian eigenvalue)"
    if surface.y is None:
        return _line(surface, "max_eig", "max_eig", ax, title)
    return plot_contour(
        surface, "max_eig", levels=levels, cmap=cmap, noise_floor=False, ax=ax, title=title
    )
