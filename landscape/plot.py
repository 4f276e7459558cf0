"""Plots of loss surfaces: contours, heat maps, 3D surfaces, 1D curves and trajectories.

Every function takes a :class:`~landscape.surface.Surface` (or plain arrays), draws on the
``ax`` it is given (a new figure when ``None``) and returns that Axes; matplotlib is imported
inside the functions. The options keep tomgoldstein/loss-landscape's meaning:

- ``vmin``, ``vmax``, ``vlevel``: contour levels ``np.arange(vmin, vmax, vlevel)`` and the
  colour limits of heat maps (loss-landscape's command-line defaults are 0.1, 10, 0.5; here
  ``None`` means "from the data": the finite minimum, the maximum and about 15 round levels);
- ``log``: logarithmic loss axis of 1D plots (log colour scale for heat maps,
  ``log(z + 0.1)`` for 3D surfaces, as ``h52vtp.py --log``);
- ``loss_max``: upper limit of the loss axis of 1D plots;
- ``xmin``, ``xmax``: x-axis limits of 1D plots (``None``: the data's; the command line maps
  loss-landscape's defaults -1 and 1 to ``None``, as its ``plot_1D.py`` does);
- ``zlim``: upper z limit of the 3D surface. loss-landscape's ``plot_2D.py`` parses
  ``--zlim`` (default 10) but never uses it; here it sets the limit (``None``: the data's).

:func:`plot_1d_repeat` overlays the 1D curves of several surfaces (e.g. along different random
directions) in one figure, as loss-landscape's ``plot_1d_loss_err_repeat``.

Points that are not ``done`` are NaN and left blank, so a partial surface plots.

Noise floor: every point's loss is an estimate with a standard error (``<metric>_se``, from
the per-batch means). Contour levels closer together than twice the median standard error
cannot be told apart from noise: :func:`plot_contour` keeps levels at least that far apart
solid and draws the ones in between dashed and grey, with a legend entry giving the floor;
:func:`plot_1d` shades a band of ``band`` (default 2) standard errors around each curve.

The code: this module holds the 1D plots (:func:`plot_1d`, :func:`plot_1d_repeat`) and the
standard figure set (:func:`plot_all`); the 2D plots (``_plot_2d.py``: :func:`plot_contour`,
:func:`plot_heatmap`, :func:`plot_surface_3d`, :func:`plot_trajectory`) and what every plot
shares (``_plot_grid.py``: values, levels, labels, :func:`noise_floor`) are defined in private
modules beside it and re-exported here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# Defined in the private modules, importable from here as before (the private helpers are the
# ones this module uses).
from landscape._plot_2d import plot_contour as plot_contour
from landscape._plot_2d import plot_heatmap as plot_heatmap
from landscape._plot_2d import plot_surface_3d as plot_surface_3d
from landscape._plot_2d import plot_trajectory as plot_trajectory
from landscape._plot_grid import _axis_labels, _grid, _is_surface, _new_axes, _pretty
from landscape._plot_grid import noise_floor as noise_floor

__all__ = [
    "noise_floor",
    "plot_1d",
    "plot_1d_repeat",
    "plot_all",
    "plot_contour",
    "plot_heatmap",
    "plot_surface_3d",
    "plot_trajectory",
]


# --------------------------------------------------------------------------------------------
# 1D
# --------------------------------------------------------------------------------------------


def plot_1d(
    surface: Any,
    metrics: Iterable[str] | None = None,
    *,
    x: Any = None,
    se: Any = None,
    ax: Any = None,
    log: bool = False,
    loss_max: float | None = None,
    xmin: float | None = None,
    xmax: float | None = None,
    accuracy: bool = True,
    error_band: bool = True,
    band: float = 2.0,
    title: str | None = None,
) -> Any:
    """Loss (left axis) and accuracy in % (right axis) along a 1D surface, as loss-landscape's
    ``_1d_loss_acc``: train solid, test dashed.

    ``metrics`` defaults to every ``*_loss`` metric, plus ``*_acc`` when ``accuracy``. With
    ``error_band`` each curve with a ``<metric>_se`` gets a band of ``band`` standard errors.
    ``log`` makes the loss axis logarithmic; ``loss_max`` caps it. Returns the loss Axes (the
    accuracy Axes is its twin, in ``ax.figure.axes``).

    ``surface`` may also be an array of values with coordinates ``x`` and errors ``se``.
    """
    if not _is_surface(surface):
        grid = _grid(surface, "loss", x=x, se=se, ndim=1)
        series = [("loss", grid.z, grid.se)]
        coords = grid.x
    else:
        if surface.y is not None:
            raise ValueError("plot_1d needs a 1D surface (plot_contour draws 2D ones)")
        if metrics is None:

            def order(name: str) -> tuple[bool, str]:
                return (not name.startswith("train"), name)

            names = sorted((k for k in surface.metrics if k.endswith("_loss")), key=order)
            if accuracy:
                names += sorted((k for k in surface.metrics if k.endswith("_acc")), key=order)
            if not names:
                names = sorted(k for k in surface.metrics if not k.endswith("_se"))
        else:
            names = list(metrics)
        series = []
        for name in names:
            grid = _grid(surface, name, ndim=1)
            series.append((name, grid.z, grid.se))
        coords = np.asarray(surface.x, dtype=np.float64)
    if not any(np.isfinite(values).any() for _, values, _ in series):
        raise ValueError("nothing to plot: no point of the surface is done")

    ax = _new_axes(ax)
    acc_ax = None
    handles = []
    for name, values, errors in series:
        line, target, scale, color, acc_ax = _metric_line(
            ax, acc_ax, coords, name, values, _pretty(name)
        )
        handles.append(line)
        if error_band and errors is not None and np.isfinite(errors).any():
            target.fill_between(
                coords,
                scale * (values - band * errors),
                scale * (values + band * errors),
                color=color,
                alpha=0.2,
                linewidth=0,
                label=f"{_pretty(name)} ± {band:g} SE",
            )
    xlim = (coords.min() if xmin is None else xmin, coords.max() if xmax is None else xmax)
    _finish_loss_acc_axes(ax, acc_ax, surface, log=log, loss_max=loss_max, xlim=xlim)
    if error_band and any(errors is not None for _, _, errors in series):
        from matplotlib.patches import Patch

        handles.append(Patch(color="0.5", alpha=0.3, label=f"± {band:g} SE"))
    ax.legend(handles=handles, loc="best", fontsize=8)
    if title is not None:
        ax.set_title(title)
    return ax


def _metric_line(ax: Any, acc_ax: Any, coords, name: str, values, label: str):
    """One 1D curve: a loss on ``ax``, an accuracy in % on the twin ``acc_ax`` (created on first
    use); train solid, test dashed. Returns (line, its Axes, scale, colour, acc_ax)."""
    if name.endswith("_acc"):
        if acc_ax is None:
            acc_ax = ax.twinx()
        target, scale, color = acc_ax, 100.0, "C3"
    else:
        target, scale, color = ax, 1.0, "C0"
    style = "--" if name.startswith("test") else "-"
    (line,) = target.plot(
        coords, scale * values, linestyle=style, color=color, linewidth=1, label=label
    )
    return line, target, scale, color, acc_ax


def _finish_loss_acc_axes(
    ax: Any, acc_ax: Any, surface: Any, *, log: bool, loss_max: float | None, xlim
) -> None:
    """Scales, limits and labels of a loss Axes and its accuracy twin (if any)."""
    if log:
        ax.set_yscale("log")
    if loss_max is not None:
        if log:
            ax.set_ylim(top=loss_max)
        else:
            ax.set_ylim(0, loss_max)
    ax.set_xlim(*xlim)
    ax.set_ylabel("Loss", color="C0")
    ax.tick_params("y", colors="C0")
    if acc_ax is not None:
        acc_ax.set_ylim(0, 100)
        acc_ax.set_ylabel("Accuracy (%)", color="C3")
        acc_ax.tick_params("y", colors="C3")
    xlabel, _ = _axis_labels(surface)
    ax.set_xlabel(xlabel)


def plot_1d_repeat(
    surfaces: Sequence[Any],
    *,
    labels: Sequence[str] | None = None,
    ax: Any = None,
    log: bool = False,
    loss_max: float | None = None,
    xmin: float | None = None,
    xmax: float | None = None,
    accuracy: bool = True,
    title: str | None = None,
) -> Any:
    """The 1D curves of several surfaces in one figure (loss-landscape's
    ``plot_1d_loss_err_repeat``): every ``*_loss`` of every surface on the loss Axes (train
    solid, test dashed) and, with ``accuracy``, every ``*_acc`` in % on its twin, one line per
    surface and metric (labelled ``"<metric> [<label>]"``, ``labels`` defaulting to 1, 2, ...).
    The x range is the union of the surfaces' unless ``xmin``/``xmax`` are given. Returns the
    loss Axes."""
    surfaces = list(surfaces)
    if not surfaces:
        raise ValueError("plot_1d_repeat needs at least one surface")
    labels = [str(i + 1) for i in range(len(surfaces))] if labels is None else list(labels)
    if len(labels) != len(surfaces):
        raise ValueError(f"{len(labels)} labels for {len(surfaces)} surfaces")
    ax = _new_axes(ax)
    acc_ax = None
    drawn = False
    lows, highs = [], []
    for surface, label in zip(surfaces, labels):
        if not _is_surface(surface) or surface.y is not None:
            raise ValueError(f"plot_1d_repeat needs 1D surfaces ({label} is not one)")
        names = sorted(k for k in surface.metrics if k.endswith("_loss"))
        if accuracy:
            names += sorted(k for k in surface.metrics if k.endswith("_acc"))
        coords = np.asarray(surface.x, dtype=np.float64)
        lows.append(coords.min())
        highs.append(coords.max())
        for name in names:
            values = _grid(surface, name, ndim=1).z
            drawn = drawn or bool(np.isfinite(values).any())
            *_, acc_ax = _metric_line(
                ax, acc_ax, coords, name, values, f"{_pretty(name)} [{label}]"
            )
    if not drawn:
        raise ValueError("nothing to plot: no point of the surfaces is done")
    xlim = (min(lows) if xmin is None else xmin, max(highs) if xmax is None else xmax)
    _finish_loss_acc_axes(ax, acc_ax, surfaces[0], log=log, loss_max=loss_max, xlim=xlim)
    ax.set_title(f"{len(surfaces)} surfaces" if title is None else title)
    return ax


# --------------------------------------------------------------------------------------------
# the standard figure set
# --------------------------------------------------------------------------------------------


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
    go to the 1D plot, ``zlim`` to the 3D one.
    """
    from matplotlib.figure import Figure

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
            fig.savefig(path, dpi=dpi, bbox_inches="tight", format=fmt.lstrip("."))
            paths.append(path)
    return paths
