"""The notebook figure rules of tests/figure_checks.py, on figures built here."""

from __future__ import annotations

import numpy as np
import pytest

from tests.figure_checks import FigureProblem, check_open_figures, figure_problems

plt = pytest.importorskip("matplotlib.pyplot")


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _labelled(ax, title="t"):
    ax.set(xlabel="x", ylabel="y", title=title)


def test_readable_figure_passes():
    fig, (a, b) = plt.subplots(1, 2)
    a.errorbar([0, 1, 2], [1, 2, 4], yerr=[0.1, 0.2, 0.1], capsize=3, label="mean")
    a.axhline(2.0, color="k")  # a reference line, not data
    _labelled(a)
    image = b.imshow(np.arange(6.0).reshape(2, 3))
    fig.colorbar(image, ax=b)
    b.set(xlabel="column", ylabel="row")
    assert figure_problems(fig) == []


def test_each_rule_is_reported():
    fig, (a, b) = plt.subplots(1, 2)
    a.plot([1, 2, 3])
    a.plot([2, 2, 2])
    b.imshow(np.full((2, 2), np.nan))
    problems = " | ".join(figure_problems(fig))
    for text in (
        "no title",
        "no x label",
        "no y label",
        "2 lines and no legend",
        "constant values (2)",
        "image has only NaN values",
    ):
        assert text in problems


def test_3d_axes_need_no_legend_or_labels_and_shared_labels_count():
    fig = plt.figure()
    ax = fig.add_subplot(1, 2, 1, projection="3d")
    ax.plot([0, 1, 2], [0, 1, 0], [1, 2, 3])
    ax.plot([0, 1, 2], [1, 0, 1], [3, 1, 2])
    ax.set_title("surface")
    left = fig.add_subplot(1, 2, 2)
    left.plot([1, 2, 3], label="a")
    fig.supxlabel("step")
    left.set_ylabel("loss")
    assert figure_problems(fig) == []


def test_check_open_figures_raises_and_closes():
    plt.subplots()
    with pytest.raises(FigureProblem, match="figure 1: figure has no title"):
        check_open_figures()
    assert plt.get_fignums() == []


def test_colour_mapped_bar_and_contour_data_that_is_nan_or_constant_is_reported():
    import warnings

    fig, axes = plt.subplots(1, 4)
    grid = np.linspace(0, 1, 4)
    axes[0].pcolormesh(grid, grid, np.full((4, 4), np.nan))
    axes[1].bar(["a", "b", "c"], [np.nan, np.nan, np.nan])
    axes[2].bar(["a", "b", "c"], [2.0, 2.0, 2.0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # matplotlib warns that no contour levels were found
        axes[3].contourf(grid, grid, np.full((4, 4), np.nan))
    for ax in axes:
        ax.set(title="t", xlabel="x", ylabel="y")
    problems = " | ".join(figure_problems(fig))
    assert "QuadMesh has only NaN values" in problems
    assert "bars" in problems and "only NaN values" in problems
    assert "constant values (2)" in problems
    assert "contours of only NaN values" in problems

    # the same kinds of plot with real data pass
    fig, axes = plt.subplots(1, 3)
    axes[0].pcolormesh(grid, grid, np.add.outer(grid, grid))
    axes[1].bar(["a", "b", "c"], [1.0, 2.0, 3.0])
    axes[2].contourf(grid, grid, np.add.outer(grid, grid))
    for ax in axes:
        ax.set(title="t", xlabel="x", ylabel="y")
    assert figure_problems(fig) == []
