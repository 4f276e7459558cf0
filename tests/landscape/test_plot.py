"""landscape.plot: every function draws finite data, saved figures are not blank, noise floor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import PolyCollection, QuadMesh  # noqa: E402
from matplotlib.contour import ContourSet  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from mpl_toolkits.mplot3d.art3d import Poly3DCollection  # noqa: E402

from landscape import Surface  # noqa: E402
from landscape.plot import (  # noqa: E402
    noise_floor,
    plot_1d,
    plot_all,
    plot_contour,
    plot_heatmap,
    plot_surface_3d,
    plot_trajectory,
    save_figure,
)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def surface_2d(nx=21, ny=15, se=0.002, partial=False):
    x = np.linspace(-1, 1, nx)
    y = np.linspace(-0.6, 0.8, ny)
    xx, yy = np.meshgrid(x, y)
    loss = 0.2 + xx**2 + 2 * yy**2 + 0.3 * xx * yy
    acc = 1.0 / (1.0 + loss)
    done = np.ones(loss.shape, bool)
    if partial:
        done[-3:, -4:] = False
    metrics = {
        "train_loss": loss,
        "train_acc": acc,
        "train_loss_se": np.full(loss.shape, se),
        "train_acc_se": np.full(loss.shape, se / 10),
    }
    metrics = {k: np.where(done, v, np.nan) for k, v in metrics.items()}
    provenance = {"directions": {"kind": "pca", "explained_variance_ratio": [0.7, 0.2]}}
    return Surface(x=x, y=y, metrics=metrics, done=done, provenance=provenance)


def surface_1d(n=41, se=0.05):
    x = np.linspace(-1, 1.5, n)
    loss = 0.1 + 2 * x**2
    metrics = {
        "train_loss": loss,
        "test_loss": loss + 0.3,
        "train_acc": np.clip(1 - loss / 5, 0, 1),
        "test_acc": np.clip(0.9 - loss / 5, 0, 1),
        "train_loss_se": np.full(n, se),
    }
    return Surface(x=x, y=None, metrics=metrics, done=np.ones(n, bool), provenance={})


def contour_sets(ax):
    return [c for c in ax.collections if isinstance(c, ContourSet)]


def segments(contour_set):
    return [seg for level in contour_set.allsegs for seg in level if len(seg)]


def png_pixels(fig, tmp_path, name="fig.png"):
    path = tmp_path / name
    fig.savefig(path, dpi=60)
    return mpimg.imread(path)


def assert_not_blank(image):
    assert image.ndim == 3 and image.size > 0
    assert float(image[..., :3].var()) > 0


# --------------------------------------------------------------------------------------------
# each function draws finite data
# --------------------------------------------------------------------------------------------


def test_plot_contour_draws_labelled_levels(tmp_path):
    surface = surface_2d()
    ax = plot_contour(surface, vmin=0.2, vmax=3.0, vlevel=0.2)
    (contours,) = contour_sets(ax)
    np.testing.assert_allclose(contours.levels, np.arange(0.2, 3.0, 0.2))
    segs = segments(contours)
    assert segs and all(np.isfinite(s).all() for s in segs)
    assert ax.texts, "levels are labelled"
    assert ax.get_xlabel() == "1st PC: 70.00 %" and ax.get_ylabel() == "2nd PC: 20.00 %"
    assert ax.get_legend() is None  # standard error far below the level spacing
    assert_not_blank(png_pixels(ax.figure, tmp_path))


def test_plot_contour_from_arrays_with_given_axes():
    surface = surface_2d(nx=9, ny=5)
    fig = Figure()
    ax = fig.add_subplot()
    out = plot_contour(surface.metrics["train_loss"], x=surface.x, y=surface.y, ax=ax)
    assert out is ax
    assert segments(contour_sets(ax)[0])


@pytest.mark.parametrize("filled", [False, True], ids=["image", "filled"])
@pytest.mark.parametrize("log", [False, True], ids=["linear", "log"])
def test_plot_heatmap(tmp_path, filled, log):
    ax = plot_heatmap(surface_2d(partial=True), filled=filled, log=log, vmin=0.1, vmax=3)
    if filled:
        (contours,) = contour_sets(ax)
        assert segments(contours)
    else:
        (mesh,) = [c for c in ax.collections if isinstance(c, QuadMesh)]
        values = np.ma.masked_invalid(mesh.get_array())
        assert values.count() == 21 * 15 - 12  # the points not done stay blank
        assert np.isfinite(values.compressed()).all()
    assert len(ax.figure.axes) == 2  # with a colour bar
    assert_not_blank(png_pixels(ax.figure, tmp_path))


def test_plot_surface_3d_is_not_blank(tmp_path):
    surface = surface_2d()
    ax = plot_surface_3d(surface, zmax=2.0)
    assert ax.name == "3d"
    (poly,) = [c for c in ax.collections if isinstance(c, Poly3DCollection)]
    drawn = png_pixels(ax.figure, tmp_path, "surface.png")
    quads = poly.get_paths()  # projected onto the canvas by the draw
    assert len(quads) == (21 - 1) * (15 - 1)
    assert all(np.isfinite(path.vertices).all() for path in quads)
    assert np.isclose(ax.get_zlim()[1], 2.0, atol=0.1)  # clipped at zmax
    assert_not_blank(drawn)

    # Compare with the same figure without the surface (what matplotlib >= 3.6 gives for
    # loss-landscape's Axes3D(fig)): the surface must cover a good part of the picture.
    fig = plt.figure()
    fig.add_subplot(projection="3d")
    fig.colorbar(matplotlib.cm.ScalarMappable(cmap="coolwarm"), ax=fig.axes[0], shrink=0.5)
    empty = png_pixels(fig, tmp_path, "empty.png")
    assert drawn.shape == empty.shape
    changed = np.abs(drawn[..., :3] - empty[..., :3]).max(axis=-1) > 0.1
    assert changed.mean() > 0.05


def test_plot_surface_3d_rejects_2d_axes():
    fig = Figure()
    with pytest.raises(ValueError, match="3d"):
        plot_surface_3d(surface_2d(), ax=fig.add_subplot())


def test_plot_1d_curves_and_error_band(tmp_path):
    surface = surface_1d()
    ax = plot_1d(surface, loss_max=5)
    labels = [line.get_label() for line in ax.lines]
    assert labels == ["train loss", "test loss"]
    for line in ax.lines:
        assert np.isfinite(line.get_ydata()).all()
    acc_ax = [other for other in ax.figure.axes if other is not ax][0]
    assert [line.get_label() for line in acc_ax.lines] == ["train acc", "test acc"]
    assert max(line.get_ydata().max() for line in acc_ax.lines) > 1  # accuracy in %
    assert acc_ax.get_ylim() == (0, 100)
    assert ax.get_ylim() == (0, 5)
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 1  # train_loss has a standard error, test_loss has none
    band_y = np.concatenate([p.vertices[:, 1] for p in bands[0].get_paths()])
    x0 = np.argmin(np.abs(surface.x))
    assert band_y.min() == pytest.approx(surface.metrics["train_loss"][x0] - 2 * 0.05)
    legend_texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "± 2 SE" in legend_texts
    assert_not_blank(png_pixels(ax.figure, tmp_path))


def test_plot_1d_log_and_arrays():
    ax = plot_1d(surface_1d(), log=True, accuracy=False)
    assert ax.get_yscale() == "log"
    assert len(ax.figure.axes) == 1
    ax = plot_1d(np.array([3.0, 1.0, 2.0]), x=[-1, 0, 1], se=0.1)
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), [3.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="1D"):
        plot_1d(surface_2d())


def test_plot_trajectory(tmp_path):
    path = np.c_[np.linspace(0.9, 0.0, 12), np.linspace(-0.5, 0.0, 12) ** 2]
    ax = plot_trajectory(surface_2d(), path)
    assert segments(contour_sets(ax)[0])
    (track,) = [line for line in ax.lines if line.get_label() == "trajectory"]
    np.testing.assert_array_equal(track.get_xydata(), path)
    assert ax.get_xlabel().startswith("1st PC")
    assert_not_blank(png_pixels(ax.figure, tmp_path))
    ax = plot_trajectory(None, path, explained_variance_ratio=[0.5, 0.25])
    assert ax.get_ylabel() == "2nd PC: 25.00 %"


# --------------------------------------------------------------------------------------------
# noise floor
# --------------------------------------------------------------------------------------------


def test_noise_floor_marks_levels_finer_than_twice_the_standard_error():
    surface = surface_2d(se=0.25)  # 2 x median SE = 0.5, levels every 0.2
    assert noise_floor(surface) == pytest.approx(0.5)
    ax = plot_contour(surface, vmin=0.2, vmax=3.0, vlevel=0.2)
    solid, faint = contour_sets(ax)
    levels = np.arange(0.2, 3.0, 0.2)
    np.testing.assert_allclose(solid.levels, levels[::3])  # 0.6 apart >= 0.5
    np.testing.assert_allclose(np.sort(np.r_[solid.levels, faint.levels]), levels)
    assert segments(faint)
    assert all(style[1] for style in faint.get_linestyles())  # dashed
    assert np.allclose(faint.get_edgecolor()[:, :3], 0.6)  # grey
    legend = ax.get_legend()
    assert legend is not None
    (text,) = [t.get_text() for t in legend.get_texts()]
    assert "noise floor" in text and "0.5" in text


def test_noise_floor_can_be_switched_off_and_needs_a_standard_error():
    surface = surface_2d(se=0.25)
    ax = plot_contour(surface, vlevel=0.2, noise_floor=False)
    assert len(contour_sets(ax)) == 1 and ax.get_legend() is None
    no_se = Surface(
        x=surface.x,
        y=surface.y,
        metrics={"train_loss": surface.metrics["train_loss"]},
        done=surface.done,
        provenance={},
    )
    assert np.isnan(noise_floor(no_se))
    ax = plot_contour(no_se, vlevel=0.2)
    assert len(contour_sets(ax)) == 1 and ax.get_legend() is None


# --------------------------------------------------------------------------------------------
# the standard figure set
# --------------------------------------------------------------------------------------------


def test_plot_all_2d(tmp_path):
    paths = plot_all(
        surface_2d(nx=11, ny=9, partial=True),
        tmp_path / "figs" / "run",
        trajectory=[[0.5, 0.5], [0.2, 0.1], [0.0, 0.0]],
        dpi=40,
    )
    names = sorted(p.name for p in paths)
    expected = [
        f"run_train_loss_{kind}.png"
        for kind in ("2dcontour", "2dcontour_proj", "2dcontourf", "2dheat", "3dsurface")
    ]
    assert names == sorted(expected)
    for path in paths:
        assert path.is_file() and path.stat().st_size > 0
        assert_not_blank(mpimg.imread(path))


def test_plot_all_1d(tmp_path):
    paths = plot_all(
        surface_1d(), tmp_path / "run", formats=("png", "pdf"), log=True, loss_max=10, dpi=40
    )
    assert [p.name for p in paths] == ["run_1d_loss_acc_log.png", "run_1d_loss_acc_log.pdf"]
    assert paths[1].read_bytes().startswith(b"%PDF")
    assert_not_blank(mpimg.imread(paths[0]))


def test_public_names_of_landscape_plot():
    """``landscape.plot``'s public names are the objects its modules define."""
    import landscape.plot as plot
    import landscape.plot.eigmap as eigmap
    import landscape.plot.figures as figures
    import landscape.plot.grid as grid
    import landscape.plot.line as line
    import landscape.plot.plane as plane
    import landscape.plot.sharpness as sharpness
    import landscape.plot.spectrum as spectrum

    two_d = ("plot_contour", "plot_heatmap", "plot_surface_3d", "plot_trajectory")
    for module, names in (
        (plane, two_d),
        (line, ("plot_1d", "plot_1d_repeat")),
        (figures, ("plot_all", "save_figure")),
        (grid, ("noise_floor",)),
        (spectrum, ("plot_convergence", "plot_density", "save_spectrum")),
        (eigmap, ("plot_eig_ratio", "plot_max_eig")),
        (sharpness, ("plot_sharpness", "save_sharpness")),
    ):
        for name in names:
            assert getattr(plot, name) is getattr(module, name), name
    assert plot.__all__ == sorted(
        [
            *("noise_floor", "plot_1d", "plot_1d_repeat", "plot_all", *two_d),
            *("plot_convergence", "plot_density", "save_figure", "save_spectrum"),
            *("plot_eig_ratio", "plot_max_eig", "plot_sharpness", "save_sharpness"),
        ]
    )


def test_save_figure_writes_the_format_of_the_suffix_and_is_atomic(tmp_path, monkeypatch):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    png = save_figure(fig, tmp_path / "sub" / "curve.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert save_figure(fig, tmp_path / "curve.pdf").read_bytes()[:5] == b"%PDF-"
    assert save_figure(fig, tmp_path / "curve.out", format="svg").read_text().count("<svg") == 1
    with pytest.raises(ValueError, match="give the file a suffix"):
        save_figure(fig, tmp_path / "curve")

    # a writer killed half-way leaves the previous file whole and no temporary file behind
    before = png.read_bytes()

    def broken(self, fname, **kwargs):
        Path(fname).write_bytes(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(KeyboardInterrupt):
        save_figure(fig, png)
    assert png.read_bytes() == before
    assert sorted(p.name for p in png.parent.iterdir()) == ["curve.png"]
