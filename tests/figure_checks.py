"""Checks that a notebook's matplotlib figures are readable, run after every cell in smoke mode.

``tests/test_notebooks.py`` executes ``install(get_ipython())`` in the kernel before a notebook's
first cell. After each cell, every open figure is checked and then closed (as the inline backend
does after a cell): a problem raises :class:`FigureProblem` inside IPython's ``post_run_cell``
callback, which the kernel reports as an error output of that cell, and the test fails naming
the cell. The rules:

- every figure has a title: a ``suptitle`` or a title on at least one of its axes;
- every 2-D axes (not a colorbar, not switched off with ``axis('off')``) has an x and a y label,
  its own, the figure's ``supxlabel``/``supylabel``, or that of an axes it shares the axis with;
- a 2-D axes with more than one data line has a legend (its own or the figure's); 3-D axes and
  image axes (``imshow``) are exempt, error-bar caps and reference lines (``axhline``) are not
  counted as lines;
- no line and no image holds only NaNs, and no line of three or more finite points or image is
  constant (an empty-looking panel in smoke mode means the smoke run shows nothing).

Import from tests as ``from tests.figure_checks import figure_problems``.
"""

from __future__ import annotations

import numpy as np


class FigureProblem(AssertionError):
    """A figure a reader could not read; the message names each problem."""


def _is_3d(ax) -> bool:
    return getattr(ax, "name", "") == "3d"


def _is_colorbar(ax) -> bool:
    return ax.get_label() == "<colorbar>" or hasattr(ax, "_colorbar")


def _has_label(ax, which: str, fig) -> bool:
    get = ax.get_xlabel if which == "x" else ax.get_ylabel
    if get():
        return True
    sup = getattr(fig, f"_sup{which}label", None)
    if sup is not None and sup.get_text():
        return True
    shared = ax.get_shared_x_axes() if which == "x" else ax.get_shared_y_axes()
    return any(
        (other.get_xlabel() if which == "x" else other.get_ylabel())
        for other in shared.get_siblings(ax)
        if other is not ax
    )


def _data_lines(ax) -> list:
    caps = set()
    for container in ax.containers:
        lines = getattr(container, "lines", None)
        if isinstance(lines, tuple) and len(lines) >= 2 and lines[1]:
            caps.update(lines[1])
    return [
        line
        for line in ax.lines
        if line not in caps and all(line.get_transform().contains_branch_seperately(ax.transData))
    ]


def _constant_or_nan(values, min_points: int) -> str | None:
    array = np.ma.filled(np.ma.asarray(values, dtype=float), np.nan).ravel()
    finite = array[np.isfinite(array)]
    if array.size and not finite.size:
        return "only NaN values"
    if finite.size >= min_points and float(finite.max()) == float(finite.min()):
        return f"constant values ({finite[0]:g})"
    return None


def axes_problems(ax, fig) -> list[str]:
    """Problems of one axes (empty when it is readable)."""
    if _is_colorbar(ax):
        return []
    name = repr(ax.get_title()) if ax.get_title() else f"axes {fig.axes.index(ax)}"
    problems = []
    if not _is_3d(ax) and ax.axison:
        for which in "xy":
            if not _has_label(ax, which, fig):
                problems.append(f"{name}: no {which} label")
    lines = _data_lines(ax)
    if not _is_3d(ax) and not ax.images and len(lines) > 1:
        if ax.get_legend() is None and not fig.legends:
            problems.append(f"{name}: {len(lines)} lines and no legend")
    for index, line in enumerate(lines):
        bad = _constant_or_nan(line.get_ydata(), 3)
        if bad:
            problems.append(f"{name}: line {index} ({line.get_label()!r}) has {bad}")
    for image in ax.images:
        bad = _constant_or_nan(image.get_array(), 2)
        if bad:
            problems.append(f"{name}: image has {bad}")
    problems.extend(_collection_problems(ax, name))
    from matplotlib.container import BarContainer

    for container in ax.containers:
        if isinstance(container, BarContainer):
            bad = _constant_or_nan([bar.get_height() for bar in container], 3)
            if bad:
                problems.append(f"{name}: bars {container.get_label()!r} have {bad}")
    return problems


def _collection_problems(ax, name: str) -> list[str]:
    """Colour-mapped data (pcolormesh, tripcolor, scatter with colours) that is all NaN or
    constant, and filled or line contours of data that was all NaN (no level drawn)."""
    from matplotlib.contour import ContourSet
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    problems = []
    for collection in ax.collections:
        if isinstance(collection, ContourSet):
            levels = np.asarray(collection.levels, dtype=float)
            drawn = any(len(path.vertices) for path in collection.get_paths())
            if not np.isfinite(levels).any() or not drawn:
                problems.append(f"{name}: contours of only NaN values (nothing drawn)")
        elif collection.get_array() is not None and not isinstance(collection, Poly3DCollection):
            bad = _constant_or_nan(collection.get_array(), 2)
            if bad:
                problems.append(f"{name}: {type(collection).__name__} has {bad}")
    return problems


def figure_problems(fig) -> list[str]:
    """Problems of one figure (empty when it is readable)."""
    suptitle = fig.get_suptitle() if hasattr(fig, "get_suptitle") else ""
    problems = []
    if not suptitle and not any(ax.get_title() for ax in fig.axes):
        problems.append("figure has no title or suptitle")
    for ax in fig.axes:
        problems.extend(axes_problems(ax, fig))
    return problems


def check_open_figures(close: bool = True) -> None:
    """Check every open pyplot figure, close them, raise FigureProblem listing the problems."""
    import matplotlib.pyplot as plt

    problems = []
    for number in plt.get_fignums():
        fig = plt.figure(number)
        problems.extend(f"figure {number}: {p}" for p in figure_problems(fig))
    if close:
        plt.close("all")
    if problems:
        raise FigureProblem("; ".join(problems))


def install(shell) -> None:
    """Run :func:`check_open_figures` after every cell of an IPython ``shell``."""

    def after_cell(result) -> None:
        if "matplotlib.pyplot" in __import__("sys").modules:
            check_open_figures()

    shell.events.register("post_run_cell", after_cell)
