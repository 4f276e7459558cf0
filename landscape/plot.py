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
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

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

_FAINT_COLOR = "0.6"


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - matplotlib is a dependency
        raise ImportError("landscape.plot needs matplotlib: pip install matplotlib") from err
    return plt


class _Grid(NamedTuple):
    x: np.ndarray
    y: np.ndarray | None
    z: np.ndarray  # NaN where not done
    se: np.ndarray | None
    label: str


def _is_surface(obj: Any) -> bool:
    return hasattr(obj, "metrics") and hasattr(obj, "done") and hasattr(obj, "x")


def _grid(
    surface: Any,
    metric: str,
    *,
    x: Any = None,
    y: Any = None,
    se: Any = None,
    ndim: int,
) -> _Grid:
    """Coordinates, values (NaN where not done) and standard errors of ``metric``."""
    if _is_surface(surface):
        if metric not in surface.metrics:
            raise KeyError(f"metric {metric!r} not in surface (have {sorted(surface.metrics)})")
        grid_ndim = 1 if surface.y is None else 2
        if grid_ndim != ndim:
            raise ValueError(f"this plot needs a {ndim}D surface, got a {grid_ndim}D one")
        done = np.asarray(surface.done, dtype=bool)
        z = np.where(done, np.asarray(surface.metrics[metric], dtype=np.float64), np.nan)
        se_values = surface.metrics.get(metric + "_se")
        if se_values is not None:
            se_values = np.where(done, np.asarray(se_values, dtype=np.float64), np.nan)
        return _Grid(
            np.asarray(surface.x, dtype=np.float64),
            None if surface.y is None else np.asarray(surface.y, dtype=np.float64),
            z,
            se_values,
            metric,
        )
    z = np.asarray(surface, dtype=np.float64)
    if z.ndim != ndim:
        raise ValueError(f"this plot needs a {ndim}D array of values, got shape {z.shape}")
    x = np.arange(z.shape[-1], dtype=np.float64) if x is None else np.asarray(x, np.float64)
    if x.shape != (z.shape[-1],):
        raise ValueError(f"x has shape {x.shape}, values have shape {z.shape}")
    if ndim == 2:
        y = np.arange(z.shape[0], dtype=np.float64) if y is None else np.asarray(y, np.float64)
        if y.shape != (z.shape[0],):
            raise ValueError(f"y has shape {y.shape}, values (ny, nx) have shape {z.shape}")
    else:
        y = None
    if se is not None:
        se = np.broadcast_to(np.asarray(se, dtype=np.float64), z.shape)
    return _Grid(x, y, z, se, metric)


def _find(mapping: Any, key: str) -> Any:
    """First value stored under ``key`` in a nested mapping (``None`` if absent)."""
    if isinstance(mapping, Mapping):
        if key in mapping:
            return mapping[key]
        for value in mapping.values():
            found = _find(value, key)
            if found is not None:
                return found
    return None


def _axis_labels(surface: Any, explained_variance_ratio: Any = None) -> tuple[str, str]:
    ratio = explained_variance_ratio
    if ratio is None and _is_surface(surface):
        ratio = _find(surface.provenance, "explained_variance_ratio")
    if ratio is not None and len(ratio) >= 2:
        return f"1st PC: {100 * ratio[0]:.2f} %", f"2nd PC: {100 * ratio[1]:.2f} %"
    return "x", "y"


def _pretty(metric: str) -> str:
    return metric.replace("_", " ")


def _finite(z: np.ndarray) -> np.ndarray:
    finite = z[np.isfinite(z)]
    if finite.size == 0:
        raise ValueError("nothing to plot: no point of the surface is done")
    return finite


def _levels(
    z: np.ndarray,
    vmin: float | None,
    vmax: float | None,
    vlevel: float | None,
    levels: Any,
) -> np.ndarray:
    """Contour levels: explicit ``levels``, else ``arange(vmin, vmax, vlevel)`` with data
    defaults (about 15 round levels when ``vlevel`` is ``None``)."""
    if levels is not None:
        return np.unique(np.asarray(levels, dtype=np.float64))
    finite = _finite(z)
    low = float(finite.min()) if vmin is None else float(vmin)
    high = float(finite.max()) if vmax is None else float(vmax)
    if vlevel is not None:
        if vlevel <= 0:
            raise ValueError(f"vlevel must be positive, got {vlevel}")
        return np.arange(low, high, vlevel)
    if high <= low:
        return np.array([low])
    from matplotlib.ticker import MaxNLocator

    ticks = MaxNLocator(nbins=15).tick_values(low, high)
    return ticks[(ticks >= low) & (ticks <= high)]


def noise_floor(surface: Any, metric: str = "train_loss", *, se: Any = None) -> float:
    """Twice the median standard error of ``metric`` over the done points (NaN if unknown).

    Loss differences smaller than this are not resolved by the evaluation data; contour
    levels closer than this are below the noise floor.
    """
    return _floor(surface, metric, se)


def _floor(surface: Any, metric: str, se: Any) -> float:
    if se is None:
        if not _is_surface(surface) or metric + "_se" not in surface.metrics:
            return float("nan")
        done = np.asarray(surface.done, dtype=bool)
        se = np.asarray(surface.metrics[metric + "_se"], dtype=np.float64)[done]
    se = np.asarray(se, dtype=np.float64)
    se = se[np.isfinite(se)]
    return float(2.0 * np.median(se)) if se.size else float("nan")


def _split_levels(levels: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """Levels kept solid (each at least ``floor`` above the previous solid one) and the rest."""
    if not np.isfinite(floor) or floor <= 0:
        return levels, levels[:0]
    solid, faint = [], []
    last = None
    for level in levels:
        if last is None or level - last >= floor * (1 - 1e-9):
            solid.append(level)
            last = level
        else:
            faint.append(level)
    return np.asarray(solid), np.asarray(faint)


def _new_axes(ax: Any, projection: str | None = None) -> Any:
    if ax is not None:
        return ax
    plt = _pyplot()
    fig = plt.figure()
    return fig.add_subplot(projection=projection)


# --------------------------------------------------------------------------------------------
# 2D
# --------------------------------------------------------------------------------------------


def plot_contour(
    surface: Any,
    metric: str = "train_loss",
    *,
    x: Any = None,
    y: Any = None,
    se: Any = None,
    ax: Any = None,
    vmin: float | None = None,
    vmax: float | None = None,
    vlevel: float | None = None,
    levels: Sequence[float] | None = None,
    noise_floor: bool = True,
    clabel: bool = True,
    cmap: str = "viridis",
    title: str | None = None,
) -> Any:
    """Labelled contour lines of a 2D surface (loss-landscape's ``_2dcontour``).

    Levels are ``levels`` or ``np.arange(vmin, vmax, vlevel)``. With ``noise_floor`` and a
    standard error (``<metric>_se`` in the surface, or ``se``), levels closer than twice the
    median standard error to the previous solid level are drawn dashed and grey and a legend
    entry names the floor.

    ``surface`` may also be a ``(ny, nx)`` array with coordinates ``x`` and ``y``.
    """
    grid = _grid(surface, metric, x=x, y=y, se=se, ndim=2)
    ax = _new_axes(ax)
    from matplotlib.colors import Normalize
    from matplotlib.lines import Line2D

    all_levels = _levels(grid.z, vmin, vmax, vlevel, levels)
    floor = float("nan")
    if noise_floor:
        floor = _floor(surface, metric, grid.se)
    solid, faint = _split_levels(all_levels, floor)
    norm = Normalize(vmin=all_levels.min(), vmax=all_levels.max()) if all_levels.size else None
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
            colors=_FAINT_COLOR,
            linestyles="--",
            linewidths=0.6,
        )
        ax.legend(
            handles=[
                Line2D(
                    [],
                    [],
                    color=_FAINT_COLOR,
                    linestyle="--",
                    linewidth=0.6,
                    label=f"below noise floor (2×median SE = {floor:.3g})",
                )
            ],
            loc="upper right",
            fontsize=8,
        )
    xlabel, ylabel = _axis_labels(surface)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(_pretty(metric) if title is None else title)
    return ax


def plot_heatmap(
    surface: Any,
    metric: str = "train_loss",
    *,
    x: Any = None,
    y: Any = None,
    ax: Any = None,
    vmin: float | None = None,
    vmax: float | None = None,
    vlevel: float | None = None,
    levels: Sequence[float] | None = None,
    log: bool = False,
    filled: bool = False,
    cmap: str = "viridis",
    colorbar: bool = True,
    title: str | None = None,
) -> Any:
    """Heat map (``filled=False``: one cell per grid point, loss-landscape's ``_2dheat``) or
    filled contours (``filled=True``, its ``_2dcontourf``, levels as :func:`plot_contour`).

    Colours span ``[vmin, vmax]`` (data range by default), on a log scale when ``log``.
    """
    grid = _grid(surface, metric, x=x, y=y, ndim=2)
    ax = _new_axes(ax)
    from matplotlib.colors import LogNorm, Normalize

    z = np.ma.masked_invalid(grid.z)
    finite = _finite(grid.z)
    if filled:
        all_levels = _levels(grid.z, vmin, vmax, vlevel, levels)
        if log:
            positive = finite[finite > 0]
            low = all_levels[all_levels > 0].min() if np.any(all_levels > 0) else positive.min()
            high = max(all_levels.max(), low * 10)
            all_levels = np.geomspace(low, high, max(all_levels.size, 2))
            norm = LogNorm(vmin=low, vmax=high)
        else:
            norm = Normalize(vmin=all_levels.min(), vmax=all_levels.max())
        if all_levels.size < 2:
            all_levels = np.array([all_levels[0], all_levels[0] + 1e-12])
        mappable = ax.contourf(
            grid.x, grid.y, z, levels=all_levels, cmap=cmap, norm=norm, extend="both"
        )
    else:
        low = float(finite.min()) if vmin is None else float(vmin)
        high = float(finite.max()) if vmax is None else float(vmax)
        if log:
            positive = finite[finite > 0]
            if low <= 0:
                low = float(positive.min()) if positive.size else 1e-12
            norm = LogNorm(vmin=low, vmax=max(high, low))
        else:
            norm = Normalize(vmin=low, vmax=high)
        mappable = ax.pcolormesh(grid.x, grid.y, z, cmap=cmap, norm=norm, shading="nearest")
    if colorbar:
        ax.figure.colorbar(mappable, ax=ax, label=_pretty(metric))
    xlabel, ylabel = _axis_labels(surface)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(_pretty(metric) if title is None else title)
    return ax


def plot_surface_3d(
    surface: Any,
    metric: str = "train_loss",
    *,
    x: Any = None,
    y: Any = None,
    ax: Any = None,
    vmin: float | None = None,
    vmax: float | None = None,
    zmax: float | None = None,
    zlim: float | None = None,
    log: bool = False,
    cmap: str = "coolwarm",
    colorbar: bool = True,
    title: str | None = None,
) -> Any:
    """3D surface (loss-landscape's ``_3dsurface``) on a ``projection="3d"`` Axes.

    ``zmax`` clips the values, ``log`` plots ``log(z + 0.1)``; ``vmin``/``vmax`` set the colour
    limits; ``zlim`` is the upper limit of the z axis (in the plotted units, so of
    ``log(z + 0.1)`` with ``log``; loss-landscape's ``--zlim``, which it never applies). A
    new figure gets its Axes from ``fig.add_subplot(projection="3d")`` (the ``Axes3D(fig)``
    of loss-landscape draws nothing on matplotlib >= 3.6).
    """
    grid = _grid(surface, metric, x=x, y=y, ndim=2)
    if ax is not None and getattr(ax, "name", "") != "3d":
        raise ValueError("plot_surface_3d needs an Axes made with projection='3d'")
    ax = _new_axes(ax, projection="3d")
    z = grid.z.copy()
    if zmax is not None:
        z = np.where(z > zmax, zmax, z)
    zlabel = _pretty(metric)
    if log:
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.log(z + 0.1)
        zlabel = f"log({zlabel} + 0.1)"
    _finite(z)
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
    xlabel, ylabel = _axis_labels(surface)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_zlabel(zlabel)
    ax.set_title(_pretty(metric) if title is None else title)
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
    ax = _new_axes(ax)
    if surface is not None and contour:
        plot_contour(surface, metric, ax=ax, **contour_options)
    ax.plot(path[:, 0], path[:, 1], marker=".", color=color, label=label, linewidth=1)
    ax.plot(path[0, 0], path[0, 1], marker="o", color=color, linestyle="none")
    ax.plot(path[-1, 0], path[-1, 1], marker="*", markersize=12, color=color, linestyle="none")
    xlabel, ylabel = _axis_labels(surface, explained_variance_ratio)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return ax


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
