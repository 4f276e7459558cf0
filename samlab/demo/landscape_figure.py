"""The figure of the demo's landscape section (``landscape_sgd_vs_sam.png``): the models'
surfaces and 1D slices side by side on shared scales (:func:`plot_landscapes`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from landscape.curvature import FIT_WINDOW
from landscape.plot import save_figure

#: how the figure and the section's printed lines name an optimizer; its 1D slice's colour
LABELS = {"sgd": "SGD", "sam": "SAM"}
COLORS = {"sgd": "C0", "sam": "C3"}


def _round_sig(value: float, digits: int = 2) -> float:
    if value <= 0 or not math.isfinite(value):
        return value
    return round(value, digits - 1 - int(math.floor(math.log10(value))))


def _shared_levels(values: Sequence[np.ndarray], count: int = 14) -> np.ndarray:
    """Contour levels common to all ``values``: geometric between the lowest and highest
    finite loss when they span more than a decade (the basin and the walls both get lines),
    linear otherwise; rounded to two significant digits."""
    finite = np.concatenate([v[np.isfinite(v)].ravel() for v in values])
    low, high = float(finite.min()), float(finite.max())
    if high <= low:
        return np.array([low])
    if low > 0 and high / low > 10:
        levels = np.geomspace(low * 1.15, high * 0.98, count)
    else:
        levels = np.linspace(low + 0.05 * (high - low), high * 0.98, count)
    return np.unique([_round_sig(v) for v in levels])


def plot_landscapes(
    surfaces: Mapping[str, tuple[Any, Any]], path: Path, *, rho: float, title: str = ""
) -> Path:
    """One figure, the models side by side: contour (row 1), 3D surface (row 2), and the 1D
    slices of all models on one axes (row 3: the whole slice on a log scale, and a linear zoom
    on the centre with ``±rho`` marked). Contours share their levels and colours, 3D surfaces
    their colour scale and z range, so the panels compare directly.

    ``surfaces``: optimizer -> (2D surface, 1D surface), both with ``train_loss``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    from landscape.plot import plot_1d, plot_contour, plot_surface_3d

    names = list(surfaces)
    grids = [np.asarray(surfaces[n][0].metrics["train_loss"], dtype=np.float64) for n in names]
    levels = _shared_levels(grids)
    low = min(float(np.nanmin(g)) for g in grids)
    high = max(float(np.nanmax(g)) for g in grids)

    figure = Figure(figsize=(5.6 * len(names), 15), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(3, len(names), height_ratios=[1.0, 1.0, 0.8])
    contour_axes, surface_axes = [], []
    for col, name in enumerate(names):
        surf_2d = surfaces[name][0]
        label = LABELS.get(name, name)
        ax = figure.add_subplot(grid[0, col])
        # no noise-floor split: its floor is twice the median standard error over the whole
        # grid, which the walls dominate (the SE grows with the loss: ~0.1 there, ~0.001 in
        # the basin) and which would grey out every level of the basin
        plot_contour(
            surf_2d,
            "train_loss",
            ax=ax,
            levels=levels,
            noise_floor=False,
            title=f"{label}: train loss (contours)",
        )
        ax.plot([0], [0], marker="+", color="k", markersize=10)
        ax.set_aspect("equal")
        ax.set(xlabel="x (filter-normalised)", ylabel="y (filter-normalised)")
        contour_axes.append(ax)
        ax3 = figure.add_subplot(grid[1, col], projection="3d")
        plot_surface_3d(
            surf_2d,
            "train_loss",
            ax=ax3,
            vmin=low,
            vmax=high,
            colorbar=False,
            title=f"{label}: train loss surface",
        )
        ax3.set_zlim(0.0, high * 1.02)
        ax3.set_zlabel("train loss")
        ax3.view_init(elev=28, azim=-60)
        surface_axes.append(ax3)
    figure.colorbar(
        ScalarMappable(Normalize(levels.min(), levels.max()), cmap="viridis"),
        ax=contour_axes,
        label="train loss (contour levels, shared)",
        shrink=0.8,
    )
    figure.colorbar(
        ScalarMappable(Normalize(low, high), cmap="coolwarm"),
        ax=surface_axes,
        label="train loss (shared colour scale)",
        shrink=0.6,
    )

    full_ax = figure.add_subplot(grid[2, : max(1, len(names) - 1)])
    zoom_ax = figure.add_subplot(grid[2, -1]) if len(names) > 1 else None
    zoom = max(4 * rho, FIT_WINDOW)
    handles: list[Any] = []
    zoom_values: list[np.ndarray] = []
    for name in names:
        surf_1d = surfaces[name][1]
        color = COLORS.get(name, f"C{len(handles) + 4}")
        label = LABELS.get(name, name)
        for ax, kwargs in ((full_ax, {"log": True}), (zoom_ax, {"xmin": -zoom, "xmax": zoom})):
            if ax is None:
                continue
            lines, bands = len(ax.lines), len(ax.collections)
            plot_1d(surf_1d, ["train_loss"], ax=ax, accuracy=False, **kwargs)
            for line in ax.lines[lines:]:
                line.set_color(color)
                line.set_marker(".")
                line.set_label(f"{label} train loss")
            for band in ax.collections[bands:]:
                band.set_color(color)
                band.set_alpha(0.2)
        handles.append(Line2D([], [], color=color, marker=".", label=f"{label} train loss"))
        coords = np.asarray(surf_1d.x, dtype=np.float64)
        values = np.asarray(surf_1d.metrics["train_loss"], dtype=np.float64)
        near = np.abs(coords) <= zoom * (1 + 1e-9)  # the points in the zoom and the drawn
        edges = np.interp([-zoom, zoom], coords, values)  # line where it leaves the window
        zoom_values.append(np.concatenate([values[near], edges]))
    handles.append(Patch(color="0.5", alpha=0.3, label="± 2 SE (per-batch spread)"))
    for ax in (full_ax, zoom_ax):
        if ax is None:
            continue
        ax.set_ylabel("train loss", color="k")
        ax.tick_params("y", colors="k")
        ax.set_xlabel("x (filter-normalised, the 2D surface's x direction)")
        ax.grid(True, alpha=0.3)
    rho_handle = Line2D([], [], color="0.3", linestyle=":", label=f"±rho = ±{rho:g}")
    full_ax.set_title("1D slices (log scale)")
    full_ax.legend(handles=handles, loc="upper center", fontsize=8)
    if zoom_ax is not None:
        for sign in (-1, 1):
            zoom_ax.axvline(sign * rho, color="0.3", linestyle=":", linewidth=1)
        values = np.concatenate(zoom_values)
        pad = 0.08 * (values.max() - values.min() or 1.0)
        zoom_ax.set_ylim(values.min() - pad, values.max() + pad)
        zoom_ax.set_title("centre, linear scale")
        zoom_ax.legend(handles=[*handles[:-1], rho_handle], loc="upper center", fontsize=8)
    figure.suptitle(title or "digits CNN: SGD vs SAM loss landscapes")
    save_figure(figure, path, dpi=None, bbox_inches=None)
    return path
