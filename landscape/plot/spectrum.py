"""Plots of Hessian spectra: SLQ densities side by side or overlaid, and convergence curves.

- :func:`plot_density`: one or several :class:`~landscape.curvature.results.DensityResult`
  on one Axes (overlaid, a legend entry per label) or on one Axes each (``overlay=False``, side
  by side with a shared eigenvalue axis), on a linear or logarithmic density axis (``log``:
  PyHessian's ESD plot; the bulk near zero and the few outliers then show together).
- :func:`plot_convergence`: the estimate after each product of eigenvalue and trace results
  (their ``history``), with the final value as a dotted line.
- :func:`save_spectrum`: :func:`plot_density` into a file, the figure closed.

matplotlib is imported inside the functions.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from landscape.plot.figures import save_figure
from landscape.plot.grid import new_axes

__all__ = ["plot_convergence", "plot_density", "save_spectrum"]

#: densities below this fraction of the peak are clipped on a log axis (empty grid regions)
LOG_FLOOR = 1e-8


def _as_list(results: Any) -> list[Any]:
    return list(results) if isinstance(results, (list, tuple)) else [results]


def _labels(labels: Sequence[str] | str | None, count: int) -> list[str | None]:
    if labels is None:
        return [None] * count
    labels = [labels] if isinstance(labels, str) else list(labels)
    if len(labels) != count:
        raise ValueError(f"{len(labels)} labels for {count} results")
    return labels


def _draw_density(ax: Any, result: Any, label: str | None, log: bool, **style: Any) -> None:
    density = np.asarray(result.density, dtype=np.float64)
    if log:
        floor = LOG_FLOOR * max(float(density.max()), np.finfo(np.float64).tiny)
        density = np.maximum(density, floor)
    ax.plot(result.grid, density, label=label, **style)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density (log)" if log else "density")


def plot_density(
    results: Any,
    labels: Sequence[str] | str | None = None,
    *,
    ax: Any = None,
    log: bool = False,
    overlay: bool = True,
    title: str | None = None,
    **style: Any,
) -> Any:
    """Draw spectral densities.

    Args:
        results: a :class:`DensityResult` or a sequence of them (e.g. an SGD and a SAM model).
        labels: one label per result (legend entries / subplot titles).
        ax: the Axes to draw on (``overlay``; a new figure when ``None``).
        log: logarithmic density axis (densities clipped at ``1e-8`` of their peak).
        overlay: all on one Axes; ``False``: one Axes per result in a row, sharing both axes.
        title: figure title (overlay: the Axes title).
        style: passed to ``Axes.plot``.

    Returns:
        the Axes (overlay) or the array of Axes (side by side).
    """
    results = _as_list(results)
    if not results:
        raise ValueError("plot_density needs at least one DensityResult")
    names = _labels(labels, len(results))
    if overlay:
        ax = new_axes(ax)
        for result, name in zip(results, names):
            _draw_density(ax, result, name, log, **style)
        if any(names):
            ax.legend()
        if title:
            ax.set_title(title)
        return ax
    from landscape.optional import import_optional

    plt = import_optional("matplotlib.pyplot", "landscape.plot needs matplotlib")
    fig, axes = plt.subplots(
        1,
        len(results),
        figsize=(4.5 * len(results), 3.6),
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    for axis, result, name in zip(axes[0], results, names):
        _draw_density(axis, result, None, log, **style)
        if name:
            axis.set_title(name)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return axes[0]


def plot_convergence(
    results: Any,
    labels: Sequence[str] | str | None = None,
    *,
    ax: Any = None,
    which: int = 0,
    relative: bool = False,
    **style: Any,
) -> Any:
    """The estimate after each product for eigenvalue results (entry ``which`` of each
    ``history`` row) or trace results (the running estimate), with the final value dotted.

    ``relative``: plot ``|estimate - final| / |final|`` on a log axis instead (how fast it
    settles). Returns the Axes.
    """
    results = _as_list(results)
    names = _labels(labels, len(results))
    ax = new_axes(ax)
    for result, name in zip(results, names):
        rows = result.history
        if rows and isinstance(rows[0], (tuple, list)):
            values = [row[which] if len(row) > which else np.nan for row in rows]
        else:
            values = list(rows)
        if not values:
            continue
        values = np.asarray(values, dtype=np.float64)
        final = values[-1]
        steps = np.arange(1, len(values) + 1)
        if relative:
            error = np.abs(values - final) / max(abs(final), np.finfo(np.float64).tiny)
            line = ax.semilogy(steps[:-1], np.maximum(error[:-1], 1e-17), label=name, **style)
        else:
            line = ax.plot(steps, values, label=name, **style)
            ax.axhline(final, linestyle=":", color=line[0].get_color())
    ax.set_xlabel("step")
    ax.set_ylabel("relative distance to the final estimate" if relative else "estimate")
    if any(names):
        ax.legend()
    return ax


def save_spectrum(
    path: str | os.PathLike,
    results: Any,
    labels: Sequence[str] | str | None = None,
    *,
    dpi: int = 150,
    **options: Any,
) -> Path:
    """:func:`plot_density` of ``results`` written to ``path`` (the figure is closed)."""
    from landscape.optional import import_optional

    plt = import_optional("matplotlib.pyplot", "landscape.plot needs matplotlib")
    drawn = plot_density(results, labels, **options)
    figure = (drawn if hasattr(drawn, "figure") else drawn[0]).figure
    path = save_figure(figure, path, dpi=dpi)
    plt.close(figure)
    return path
