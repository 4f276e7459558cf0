"""What the plots of :mod:`landscape.plot` share: the values to draw and their levels.

A surface (or plain arrays) as coordinates, values (NaN where not done) and standard errors
(:func:`metric_grid`); axis labels from the PCA explained variance; contour levels from explicit
values or ``vmin``/``vmax``/``vlevel`` with data defaults (:func:`contour_levels`); the noise floor
(:func:`noise_floor`: twice the median standard error) and the levels below it; a new Axes
when none is given. matplotlib is imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from landscape.optional import import_optional

FAINT_COLOR = "0.6"


class MetricGrid(NamedTuple):
    """What a plot draws of one metric."""

    x: np.ndarray
    y: np.ndarray | None
    z: np.ndarray  # NaN where not done
    se: np.ndarray | None
    label: str


def is_surface(obj: Any) -> bool:
    """Whether ``obj`` looks like a :class:`~landscape.grid.Surface` (rather than arrays)."""
    return hasattr(obj, "metrics") and hasattr(obj, "done") and hasattr(obj, "x")


def metric_grid(
    surface: Any,
    metric: str,
    *,
    x: Any = None,
    y: Any = None,
    se: Any = None,
    ndim: int,
) -> MetricGrid:
    """Coordinates, values (NaN where not done) and standard errors of ``metric``."""
    if is_surface(surface):
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
        return MetricGrid(
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
    return MetricGrid(x, y, z, se, metric)


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


def axis_labels(surface: Any, explained_variance_ratio: Any = None) -> tuple[str, str]:
    """The x and y axis labels: the PCA explained variance when known, else "x" and "y"."""
    ratio = explained_variance_ratio
    if ratio is None and is_surface(surface):
        ratio = _find(surface.provenance, "explained_variance_ratio")
    if ratio is not None and len(ratio) >= 2:
        return f"1st PC: {100 * ratio[0]:.2f} %", f"2nd PC: {100 * ratio[1]:.2f} %"
    return "x", "y"


def pretty(metric: str) -> str:
    """A metric name for a label (``train_loss`` -> ``train loss``)."""
    return metric.replace("_", " ")


def finite_values(z: np.ndarray) -> np.ndarray:
    """The finite values of ``z``; ``ValueError`` when there are none (nothing done)."""
    finite = z[np.isfinite(z)]
    if finite.size == 0:
        raise ValueError("nothing to plot: no point of the surface is done")
    return finite


def value_range(finite: np.ndarray, vmin: float | None, vmax: float | None) -> tuple[float, float]:
    """``(vmin, vmax)`` as floats, each defaulting to the minimum or maximum of ``finite``: the
    range of contour levels and of heat map colours."""
    low = float(finite.min()) if vmin is None else float(vmin)
    high = float(finite.max()) if vmax is None else float(vmax)
    return low, high


def contour_levels(
    z: np.ndarray,
    vmin: float | None,
    vmax: float | None,
    vlevel: float | None,
    levels: Any,
) -> np.ndarray:
    """Contour levels: explicit ``levels``, else ``arange(vmin, vmax, vlevel)`` with data
    defaults (about 15 round levels when ``vlevel`` is ``None``). A range with no level in it
    (``vmax`` below the data's minimum, as ``--vmax 0.5`` on a surface above 0.5) gives the one
    level ``min(vmin, vmax)``: the figures then show the whole surface above it."""
    if levels is not None:
        return np.unique(np.asarray(levels, dtype=np.float64))
    low, high = value_range(finite_values(z), vmin, vmax)
    if vlevel is not None:
        if vlevel <= 0:
            raise ValueError(f"vlevel must be positive, got {vlevel}")
        stepped = np.arange(low, high, vlevel)
        return stepped if stepped.size else np.array([min(low, high)])
    if high <= low:
        return np.array([min(low, high)])
    from matplotlib.ticker import MaxNLocator

    ticks = MaxNLocator(nbins=15).tick_values(low, high)
    return ticks[(ticks >= low) & (ticks <= high)]


def noise_floor(surface: Any, metric: str = "train_loss", *, se: Any = None) -> float:
    """Twice the median standard error of ``metric`` over the done points (NaN if unknown).

    Loss differences smaller than this are not resolved by the evaluation data; contour
    levels closer than this are below the noise floor.
    """
    return se_floor(surface, metric, se)


def se_floor(surface: Any, metric: str, se: Any) -> float:
    """:func:`noise_floor` (the plots have a flag of that name)."""
    if se is None:
        if not is_surface(surface) or metric + "_se" not in surface.metrics:
            return float("nan")
        done = np.asarray(surface.done, dtype=bool)
        se = np.asarray(surface.metrics[metric + "_se"], dtype=np.float64)[done]
    se = np.asarray(se, dtype=np.float64)
    se = se[np.isfinite(se)]
    return float(2.0 * np.median(se)) if se.size else float("nan")


def split_levels(levels: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
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


def new_axes(ax: Any, projection: str | None = None) -> Any:
    """``ax``, or the Axes of a new pyplot figure."""
    if ax is not None:
        return ax
    plt = import_optional(
        "matplotlib.pyplot", "landscape.plot needs matplotlib: pip install matplotlib"
    )
    fig = plt.figure()
    return fig.add_subplot(projection=projection)
