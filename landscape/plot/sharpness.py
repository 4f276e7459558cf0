"""Plots of parameter-space sharpness against the radius.

- :func:`plot_sharpness`: for each measure (a list of
  :class:`~landscape.curvature.sharpness.SharpnessResult` over radii, as
  :func:`~landscape.curvature.sharpness_grid` returns), the loss increase against ``rho`` with
  its standard error as error bars; a second panel shows the 0-1 error increase where the
  results have it (cross-entropy).
- :func:`save_sharpness`: the same into a file, the figure closed (what
  ``python -m landscape sharpness`` writes next to its JSON).

matplotlib is imported inside the functions.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from landscape.optional import import_optional
from landscape.plot.figures import save_figure

__all__ = ["plot_sharpness", "save_sharpness"]

#: how each measure is named in legends
MEASURE_LABELS = {
    "worst_case": "worst-case",
    "average": "average-case",
    "epsilon": "Keskar epsilon",
}


def _stderr(value: float | None, scale: float = 1.0) -> float:
    """An error bar: 0 where there is none (one chunk or draw: NaN; no 0-1 error: None)."""
    return 0.0 if value is None or not math.isfinite(value) else scale * value


def _series(results: Mapping[str, Sequence[Any]]) -> list[tuple[str, list[Any]]]:
    out = []
    for measure, items in results.items():
        items = sorted(items, key=lambda r: r.rho)
        if not items:
            raise ValueError(f"no results for the measure {measure!r}")
        out.append((measure, items))
    if not out:
        raise ValueError("plot_sharpness needs at least one measure with results")
    return out


def plot_sharpness(
    results: Mapping[str, Sequence[Any]] | Sequence[Any],
    *,
    title: str | None = None,
    log: bool | None = None,
) -> Any:
    """Draw sharpness against the radius; returns the list of Axes (one or two panels).

    Args:
        results: ``{measure: [SharpnessResult, ...]}`` or one list of results (their own
            ``measure`` names the series).
        title: the figure's suptitle (default: "sharpness against the radius").
        log: logarithmic radius axis; ``None``: when the positive radii span more than 10x.
    """
    plt = import_optional("matplotlib.pyplot", "landscape.plot needs matplotlib")
    if not isinstance(results, Mapping):
        grouped: dict[str, list[Any]] = {}
        for r in results:
            grouped.setdefault(r.measure, []).append(r)
        results = grouped
    series = _series(results)
    has_error = any(r.error_increase is not None for _, items in series for r in items)
    fig, axes = plt.subplots(1, 2 if has_error else 1, figsize=(10 if has_error else 5.5, 4))
    axes = list(axes) if has_error else [axes]
    radii = [r.rho for _, items in series for r in items if r.rho > 0]
    if log is None:
        log = bool(radii) and max(radii) > 10 * min(radii)
    for measure, items in series:
        label = MEASURE_LABELS.get(measure, measure)
        rho = [r.rho for r in items]
        axes[0].errorbar(
            rho,
            [r.loss_increase for r in items],
            yerr=[_stderr(r.loss_increase_stderr) for r in items],
            marker="o",
            capsize=3,
            label=label,
        )
        if has_error and all(r.error_increase is not None for r in items):
            axes[1].errorbar(
                rho,
                [100.0 * r.error_increase for r in items],
                yerr=[_stderr(r.error_increase_stderr, 100.0) for r in items],
                marker="o",
                capsize=3,
                label=label,
            )
    loss_name = "loss increase  L(w + d) - L(w)"
    axes[0].set(xlabel="radius rho", ylabel=loss_name, title="loss")
    if has_error:
        axes[1].set(xlabel="radius rho", ylabel="0-1 error increase (points)", title="0-1 error")
    for ax in axes:
        if log:
            ax.set_xscale("log")
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.legend()
    fig.suptitle(title or "sharpness against the radius (mean ± standard error)")
    fig.tight_layout()
    return axes


def save_sharpness(
    path: str | os.PathLike,
    results: Mapping[str, Sequence[Any]] | Sequence[Any],
    *,
    dpi: int = 150,
    **options: Any,
) -> Path:
    """:func:`plot_sharpness` of ``results`` written to ``path`` (the figure is closed)."""
    plt = import_optional("matplotlib.pyplot", "landscape.plot needs matplotlib")
    figure = plot_sharpness(results, **options)[0].figure
    path = save_figure(figure, path, dpi=dpi)
    plt.close(figure)
    return path
