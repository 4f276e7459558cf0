"""The 1D plots of :mod:`landscape.plot`: loss and accuracy curves along a line.

:func:`plot_1d` draws one surface (with an error band of standard errors), :func:`plot_1d_repeat`
the curves of several surfaces in one figure, as loss-landscape's ``plot_1d_loss_err_repeat``.
matplotlib is imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from landscape.plot.grid import axis_labels, is_surface, metric_grid, new_axes, pretty

# --------------------------------------------------------------------------------------------
# 1D
# --------------------------------------------------------------------------------------------


def plot_1d(
    surface: Any,
    metrics: Iterable[str] | None = None,
    *,
    x: Any = None,
    se: Any = None,
    accuracy: bool = True,
    error_band: bool = True,
    band: float = 2.0,
    log: bool = False,
    loss_max: float | None = None,
    xmin: float | None = None,
    xmax: float | None = None,
    ax: Any = None,
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
    if not is_surface(surface):
        grid = metric_grid(surface, "loss", x=x, se=se, ndim=1)
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
            grid = metric_grid(surface, name, ndim=1)
            series.append((name, grid.z, grid.se))
        coords = np.asarray(surface.x, dtype=np.float64)
    if not any(np.isfinite(values).any() for _, values, _ in series):
        raise ValueError("nothing to plot: no point of the surface is done")

    ax = new_axes(ax)
    acc_ax = None
    handles = []
    for name, values, errors in series:
        line, target, scale, color, acc_ax = _metric_line(
            ax, acc_ax, coords, name, values, pretty(name)
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
                label=f"{pretty(name)} ± {band:g} SE",
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
    xlabel, _ = axis_labels(surface)
    ax.set_xlabel(xlabel)


def plot_1d_repeat(
    surfaces: Sequence[Any],
    *,
    labels: Sequence[str] | None = None,
    accuracy: bool = True,
    ax: Any = None,
    log: bool = False,
    loss_max: float | None = None,
    xmin: float | None = None,
    xmax: float | None = None,
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
    ax = new_axes(ax)
    acc_ax = None
    drawn = False
    lows, highs = [], []
    for surface, label in zip(surfaces, labels):
        if not is_surface(surface) or surface.y is not None:
            raise ValueError(f"plot_1d_repeat needs 1D surfaces ({label} is not one)")
        names = sorted(k for k in surface.metrics if k.endswith("_loss"))
        if accuracy:
            names += sorted(k for k in surface.metrics if k.endswith("_acc"))
        coords = np.asarray(surface.x, dtype=np.float64)
        lows.append(coords.min())
        highs.append(coords.max())
        for name in names:
            values = metric_grid(surface, name, ndim=1).z
            drawn = drawn or bool(np.isfinite(values).any())
            *_, acc_ax = _metric_line(ax, acc_ax, coords, name, values, f"{pretty(name)} [{label}]")
    if not drawn:
        raise ValueError("nothing to plot: no point of the surfaces is done")
    xlim = (min(lows) if xmin is None else xmin, max(highs) if xmax is None else xmax)
    _finish_loss_acc_axes(ax, acc_ax, surfaces[0], log=log, loss_max=loss_max, xlim=xlim)
    ax.set_title(f"{len(surfaces)} surfaces" if title is None else title)
    return ax
