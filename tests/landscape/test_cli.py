"""``python -m landscape``: every subcommand runs; bad input gives a one-line error.

The commands run in this process through ``landscape.cli.main`` (one torch thread, models and
data from ``tests/landscape/_factories.py`` found through the current directory); one test runs
the real ``python -m landscape`` entry point.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("h5py")
pytest.importorskip("matplotlib")

from landscape.cli import main, parse_range  # noqa: E402
from landscape.io import load_surface  # noqa: E402
from tests.landscape.cli_helpers import (  # noqa: E402
    assert_one_line_error,
    run,
    surface_cmd,
)

GRID = ["--x", "-1:1:5", "--y", "0:1:5"]  # a y-range starting at 0 (loss-landscape rejects it)


@pytest.fixture(autouse=True)
def workdir(cli_workdir):
    return cli_workdir


def assert_not_blank(path):
    import matplotlib.image as mpimg

    pixels = mpimg.imread(path)[..., :3]
    assert pixels.std() > 0.02, f"{path} looks blank"
    assert (pixels < 0.9).mean() > 0.01, f"{path} has almost nothing drawn"


# --------------------------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("-1:1:51", (-1.0, 1.0, 51)),
        ("0:1:21", (0.0, 1.0, 21)),
        ("-0.5:1.5:401", (-0.5, 1.5, 401)),
        ("0:0:1", (0.0, 0.0, 1)),
        ("-1:1:51.0", (-1.0, 1.0, 51)),
    ],
)
def test_parse_range(text, expected):
    assert parse_range(text) == expected


@pytest.mark.parametrize("value", ["-1:1", "a:1:5", "-1:1:2.5", "-1:1:0", "1:2:x", "-1:1:5:7"])
def test_malformed_x_is_an_argparse_error(capsys, value):
    code = run(*surface_cmd("s.h5", "--x", value))
    assert_one_line_error(capsys, code, 2, "--x", "MIN:MAX:NUM")


def test_help_exits_cleanly(capsys):
    assert run("surface", "-h") == 0
    assert "--model MODULE:FACTORY" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------
# surface, resume, plot, vtk
# --------------------------------------------------------------------------------------------


def test_surface_2d_resume_plot_vtk(workdir, capsys):
    surf = workdir / "out" / "surf.h5"
    assert run(*surface_cmd(surf, *GRID)) == 0
    out = capsys.readouterr().out
    assert "0 already done, 25 to compute" in out

    surface = load_surface(surf)
    assert surface.shape == (5, 5) and surface.done.all()
    np.testing.assert_array_equal(surface.y, np.linspace(0, 1, 5))
    assert np.isfinite(surface.metrics["train_loss"]).all()
    assert ((surface.metrics["train_acc"] >= 0) & (surface.metrics["train_acc"] <= 1)).all()
    # samlab's defaults, recorded in the file: filter-normalised, biasbn, weights.
    meta = surface.provenance["directions"]
    assert (meta["xnorm"], meta["xignore"], meta["ynorm"], meta["yignore"]) == (
        "filter",
        "biasbn",
        "filter",
        "biasbn",
    )
    assert surface.provenance["dir_type"] == "weights"
    assert surface.provenance["flag_defaults"]["xnorm"] == "filter"
    dir_file = Path(surface.provenance["dir_file"])
    assert dir_file.parent == surf.parent and dir_file.is_file()
    assert "xnorm=filter" in dir_file.name and "seed=0" in dir_file.name
    sidecar = json.loads(surf.with_name("surf.h5.json").read_text())
    assert sidecar["runs"][-1]["computed_points"] == 25
    assert [r["points"] for r in sidecar["runs"][-1]["ranks"]] == [25]

    # The same command again resumes the complete file: nothing to compute, nothing changed.
    before = surface.metrics["train_loss"].copy()
    assert run(*surface_cmd(surf, *GRID)) == 0
    assert "25 already done, 0 to compute" in capsys.readouterr().out
    np.testing.assert_array_equal(load_surface(surf).metrics["train_loss"], before)

    assert run("plot", "--surf_file", surf) == 0
    kinds = ("2dcontour", "2dcontourf", "2dheat", "3dsurface")
    for kind in kinds:
        assert_not_blank(f"{surf}_train_loss_{kind}.png")

    assert run("vtk", "--surf_file", surf, "--log") == 0
    vtp = Path(f"{surf}_train_loss_log.vtp")
    piece = ET.parse(vtp).getroot().find("PolyData/Piece")
    assert piece.get("NumberOfPoints") == "25" and piece.get("NumberOfPolys") == "16"


def test_surface_1d_loader_test_data_and_plot(workdir, capsys):
    surf = workdir / "line.h5"
    code = run(
        *surface_cmd(surf, "--x", "-1:1:5", "--test_data", "_factories:test_data", "--plot"),
    )
    assert code == 0, capsys.readouterr().err
    surface = load_surface(surf)
    assert surface.ndim == 1 and surface.done.all()
    assert {"train_loss", "train_acc", "test_loss", "test_acc"} <= set(surface.metrics)
    assert_not_blank(f"{surf}_1d_loss_acc.png")

    # A DataLoader (shuffling) gives the same values: landscape reads its dataset in order.
    surf2 = workdir / "line_loader.h5"
    assert run(*surface_cmd(surf2, "--x", "-1:1:5", data="_factories:loader")) == 0
    np.testing.assert_array_equal(
        load_surface(surf2).metrics["train_loss"], surface.metrics["train_loss"]
    )


def test_interpolation_between_two_checkpoints(workdir, capsys):
    sys.path.insert(0, str(workdir))
    try:
        import _factories
    finally:
        sys.path.remove(str(workdir))
    first, second = _factories.cnn(), _factories.cnn()
    with torch.no_grad():
        generator = torch.Generator().manual_seed(5)
        for tensor in second.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(0.3 * torch.randn(tensor.shape, generator=generator))
    torch.save({"model": first.state_dict(), "epoch": 1}, workdir / "a.pt")
    torch.save(second.state_dict(), workdir / "b.pt")  # a plain state_dict works too
    surf = workdir / "interp.h5"
    argv = surface_cmd(surf, "--x", "0:1:3", "--dir_type", "states")
    argv += ["--model_file", "a.pt", "--model_file2", "b.pt"]
    assert run(*argv) == 0, capsys.readouterr().err
    loss = load_surface(surf).metrics["train_loss"]

    inputs, targets = _factories.data()
    for model, expected_at in ((first, 0), (second, 2)):
        with torch.no_grad():
            expected = torch.nn.functional.cross_entropy(model.eval()(inputs), targets)
        assert loss[expected_at] == pytest.approx(float(expected), rel=1e-5)


def test_existing_surface_is_not_overwritten(workdir, capsys):
    surf = workdir / "keep.h5"
    assert run(*surface_cmd(surf, "--x", "-1:1:3")) == 0
    content = surf.read_bytes()
    capsys.readouterr()
    code = run(*surface_cmd(surf, "--x", "-1:1:5"))
    assert_one_line_error(capsys, code, 1, "keep.h5", "--overwrite")
    assert surf.read_bytes() == content
    assert run(*surface_cmd(surf, "--x", "-1:1:5", "--overwrite")) == 0
    assert load_surface(surf).shape == (5,)


# --------------------------------------------------------------------------------------------
# project
# --------------------------------------------------------------------------------------------


def test_project_pca_and_direction_file(workdir, capsys):
    surf = workdir / "plane.h5"
    assert run(*surface_cmd(surf, *GRID)) == 0
    dir_file = load_surface(surf).provenance["dir_file"]

    sys.path.insert(0, str(workdir))
    try:
        import _factories
    finally:
        sys.path.remove(str(workdir))
    final = _factories.cnn().state_dict()
    traj = workdir / "traj"
    traj.mkdir()
    generator = torch.Generator().manual_seed(1)
    drift = {k: torch.randn(v.shape, generator=generator) for k, v in final.items()}
    wobble = {k: torch.randn(v.shape, generator=generator) for k, v in final.items()}
    for epoch in range(1, 7):  # natural order: model_2 before model_10
        t = (6 - epoch) / 5
        state = {
            k: v + 0.05 * t * drift[k] + 0.02 * np.sin(3 * t) * wobble[k]
            if v.is_floating_point()
            else v
            for k, v in final.items()
        }
        torch.save({"model": state, "epoch": epoch}, traj / f"model_{epoch * 2}.pt")
    capsys.readouterr()

    # PCA of the trajectory (loss-landscape's plot_trajectory.py), drawn on the surface.
    code = run("project", "--trajectory", traj, "--surf_file", surf, "--model", "_factories:cnn")
    assert code == 0, capsys.readouterr().err
    pca_file = traj / "PCA_weights_ignore=biasbn" / "directions.h5"
    proj = Path(f"{pca_file}_proj_lstsq.h5")
    import h5py

    with h5py.File(proj, "r") as f:
        xs, ys = f["proj_xcoord"][()], f["proj_ycoord"][()]
    assert xs.shape == ys.shape == (6,)
    assert abs(xs[-1]) < 1e-6 and abs(ys[-1]) < 1e-6  # the centre is the last checkpoint
    assert_not_blank(f"{proj}_train_loss_2dcontour_proj.png")
    # Again: the PCA file is reused (not silently recomputed), same projection.
    assert run("project", "--trajectory", traj, "--proj_file", workdir / "again.h5") == 0
    with h5py.File(workdir / "again.h5", "r") as f:
        np.testing.assert_allclose(f["proj_xcoord"][()], xs, rtol=1e-12, atol=1e-12)

    # Onto the surface's own random directions.
    out = workdir / "onto_random.h5"
    assert run("project", "--trajectory", traj, "--dir_file", dir_file, "--proj_file", out) == 0
    with h5py.File(out, "r") as f:
        assert f["proj_xcoord"].shape == (6,)
    assert run("plot", "--surf_file", surf, "--proj_file", out) == 0
    assert_not_blank(f"{surf}_train_loss_2dcontour_proj.png")


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model, needle",
    [
        ("_factories:nope", "has no attribute 'nope'"),
        ("no_such_module_xyz:make", "no module named 'no_such_module_xyz'"),
        ("_factories:not_a_model", "not an nn.Module"),
    ],
)
def test_unknown_factory(capsys, model, needle):
    code = run(*surface_cmd("s.h5", "--x", "-1:1:3", model=model))
    assert_one_line_error(capsys, code, 1, "--model", needle)


def test_malformed_factory_or_name_is_an_argparse_error(capsys):
    code = run(*surface_cmd("s.h5", model="my model!"))
    assert_one_line_error(capsys, code, 2, "--model", "MODULE:FACTORY", "registered NAME")


def test_bare_name_without_colon_is_looked_up_as_a_registered_name(capsys):
    from landscape.cli.named import NamedFactories

    names = NamedFactories({"landscape.models": {"cnn": "_factories:cnn"}})
    code = main(surface_cmd("s.h5", model="_factories"), prog="landscape", names=names)
    assert_one_line_error(capsys, code, 1, "--model _factories", "registered: cnn")


def test_unknown_data_factory(capsys):
    code = run(*surface_cmd("s.h5", "--x", "-1:1:3", data="_factories:nodata"))
    assert_one_line_error(capsys, code, 1, "--data", "nodata")


def test_direction_file_from_another_architecture(workdir, capsys):
    mlp_surf = workdir / "mlp.h5"
    assert run(*surface_cmd(mlp_surf, "--x", "-1:1:3", model="_factories:mlp")) == 0
    mlp_dirs = load_surface(mlp_surf).provenance["dir_file"]
    capsys.readouterr()
    code = run(*surface_cmd("cnn.h5", "--x", "-1:1:3", "--dir_file", mlp_dirs))
    assert_one_line_error(capsys, code, 1, "another architecture")
    assert not Path("cnn.h5").exists()


def test_direction_file_1d_for_a_2d_surface(workdir, capsys):
    line = workdir / "line.h5"
    assert run(*surface_cmd(line, "--x", "-1:1:3")) == 0
    dirs = load_surface(line).provenance["dir_file"]
    capsys.readouterr()
    code = run(*surface_cmd("plane.h5", *GRID, "--dir_file", dirs))
    assert_one_line_error(capsys, code, 1, "one direction", "2D")


def test_empty_dataset(capsys):
    code = run(*surface_cmd("s.h5", "--x", "-1:1:3", data="_factories:empty"))
    assert_one_line_error(capsys, code, 1, "empty")
    assert not Path("s.h5").exists()


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["--model_file", "missing.pt"], ("--model_file", "no such file")),
        (["--dir_file", "missing.h5", "--model_file2", "nope.pt"], ("--model_file2",)),
    ],
)
def test_missing_files(capsys, argv, needles):
    code = run(*surface_cmd("s.h5", "--x", "-1:1:3", *argv))
    assert_one_line_error(capsys, code, 1, *needles)


def test_missing_surface_file_for_plot_and_vtk(capsys):
    assert_one_line_error(capsys, run("plot", "--surf_file", "none.h5"), 1, "none.h5")
    assert_one_line_error(capsys, run("vtk", "--surf_file", "none.h5"), 1, "none.h5")


def test_model_file_of_another_architecture(workdir, capsys):
    sys.path.insert(0, str(workdir))
    try:
        import _factories
    finally:
        sys.path.remove(str(workdir))
    torch.save({"model": _factories.mlp().state_dict()}, workdir / "mlp.pt")
    code = run(*surface_cmd("s.h5", "--x", "-1:1:3", "--model_file", "mlp.pt"))
    assert_one_line_error(capsys, code, 1, "mlp.pt", "another architecture")


def test_mpiexec_without_mpi_flag(monkeypatch, capsys):
    monkeypatch.setenv("PMI_SIZE", "2")
    code = run(*surface_cmd("s.h5", "--x", "-1:1:3"))
    assert_one_line_error(capsys, code, 1, "--mpi")


def test_public_names_of_landscape_cli():
    """``landscape.cli``'s public names (``__all__``) are the objects its subpackage defines;
    the console script's ``landscape.cli:main`` is among them."""
    import landscape.cli as cli
    import landscape.cli.directions as directions
    import landscape.cli.entry as entry
    import landscape.cli.inputs as inputs
    import landscape.cli.named as named
    import landscape.cli.options as options
    import landscape.cli.parser as parser
    import landscape.cli.plot as plot
    import landscape.cli.project as project
    import landscape.cli.surface as surface
    import landscape.cli.vtk as vtk

    for module, names in (
        (entry, ("main",)),
        (parser, ("build_parser", "parse_range")),
        (options, ("NORM_CHOICES", "IGNORE_CHOICES")),
        (inputs, ("CLIError", "resolve_factory", "load_state", "build_model", "build_data")),
        (named, ("NamedFactories",)),
        (directions, ("FLAG_DEFAULTS", "default_dir_file", "default_surf_file")),
        (surface, ("cmd_surface",)),
        (plot, ("cmd_plot",)),
        (project, ("cmd_project",)),
        (vtk, ("cmd_vtk",)),
    ):
        for name in names:
            assert getattr(cli, name) is getattr(module, name), name
    assert {"CLIError", "build_parser", "main", "parse_range"} <= set(cli.__all__)
    assert sorted(cli.__all__, key=str.lower) == sorted(
        [
            *("CLIError", "FLAG_DEFAULTS", "IGNORE_CHOICES", "NORM_CHOICES", "build_data"),
            *("build_model", "build_parser", "cmd_plot", "cmd_project", "cmd_surface"),
            *("cmd_vtk", "default_dir_file", "default_surf_file", "load_state", "main"),
            *("parse_range", "resolve_factory", "NamedFactories"),
        ],
        key=str.lower,
    )
    for name in cli.__all__:
        assert not name.startswith("_") and hasattr(cli, name), name


def test_python_dash_m_entry_point(workdir):
    """The real ``python -m landscape`` process: a clean one-line error and exit status, and no
    runpy warning (the package is not imported twice)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_"))}
    env["OMP_NUM_THREADS"] = "1"
    result = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-m", "landscape", "vtk", "--surf_file"]
        + ["absent.h5"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "python -m landscape vtk: error: --surf_file absent.h5: no such file"
    ]


def test_corrupt_surface_file_is_refused(workdir, capsys):
    Path("bad.h5").write_bytes(b"not an HDF5 file at all")
    code = run(*surface_cmd("bad.h5", "--x", "-1:1:3"))
    assert_one_line_error(capsys, code, 1, "bad.h5")
    assert Path("bad.h5").read_bytes() == b"not an HDF5 file at all"


def test_data_split_takes_one_part(workdir, capsys):
    surf = workdir / "split.h5"
    argv = surface_cmd(surf, "--x", "-1:1:3", "--data_split", "2", "--split_idx", "1")
    assert run(*argv) == 0, capsys.readouterr().err
    surface = load_surface(surf)
    provenance = surface.provenance
    assert provenance["train_size"] == 128 and provenance["subset"] == "indices"
    # the evaluated samples are stored (train_indices), and a re-run resumes onto them
    assert surface.train_indices.size == 128 and np.unique(surface.train_indices).size == 128
    assert run(*argv) == 0, capsys.readouterr().err
    assert "3 already done, 0 to compute" in capsys.readouterr().out
    np.testing.assert_array_equal(load_surface(surf).train_indices, surface.train_indices)
    code = run(*surface_cmd("s.h5", "--x", "-1:1:3", "--data_split", "2", "--split_idx", "2"))
    assert_one_line_error(capsys, code, 1, "--split_idx")


# --------------------------------------------------------------------------------------------
# plot_1D.py / plot_2D.py flags: --xmin/--xmax, --prefix/--idx_min/--idx_max, --zlim
# --------------------------------------------------------------------------------------------


def line_surface(shift=0.0, x=None):
    from landscape import Surface

    x = np.linspace(-1.0, 1.5, 26) if x is None else x
    loss = 0.2 + (x - shift) ** 2
    metrics = {
        "train_loss": loss,
        "test_loss": loss + 0.1,
        "train_acc": np.clip(1 - loss / 4, 0, 1),
        "test_acc": np.clip(0.9 - loss / 4, 0, 1),
    }
    return Surface(x=x, y=None, metrics=metrics, done=np.ones(x.size, bool), provenance={})


@pytest.fixture
def drawn_axes(monkeypatch):
    """The Axes of the figures the CLI saves, by the plot function that drew them (told by the
    file name): the first Axes of each figure, the loss Axes or the 3D one."""
    from matplotlib.figure import Figure

    kinds = {
        "_1d_loss_acc": "plot_1d",
        "_1d_loss_err_repeat": "plot_1d_repeat",
        "_3dsurface": "plot_surface_3d",
    }
    captured: dict[str, list] = {}
    real_savefig = Figure.savefig

    def savefig(figure, fname, *args, **kwargs):
        # figures are written to a temporary name (".NAME.PID.RANDOM.tmp") and then renamed
        base = Path(str(fname)).name
        for suffix, name in kinds.items():
            if f"{suffix}." in base:
                captured.setdefault(name, []).append(figure.axes[0])
        return real_savefig(figure, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return captured


def test_plot_help_lists_the_plot_1d_and_plot_2d_flags(capsys):
    assert run("plot", "-h") == 0
    out = capsys.readouterr().out
    for flag in ("--xmin", "--xmax", "--prefix", "--idx_min", "--idx_max", "--zlim"):
        assert flag in out, flag


def test_plot_xmin_xmax_set_the_1d_axis_limits(workdir, capsys, drawn_axes):
    from landscape.io import save_surface

    save_surface("line.h5", line_surface())
    assert run("plot", "--surf_file", "line.h5", "--xmin", "-0.25", "--xmax", "0.75") == 0
    assert_not_blank("line.h5_1d_loss_acc.png")
    assert drawn_axes["plot_1d"][-1].get_xlim() == (-0.25, 0.75)
    # loss-landscape's defaults -1 and 1 mean "the data's own range" (x runs -1..1.5)
    assert run("plot", "--surf_file", "line.h5", "--xmin", "-1", "--xmax", "1") == 0
    assert drawn_axes["plot_1d"][-1].get_xlim() == (-1.0, 1.5)
    assert run("plot", "--surf_file", "line.h5") == 0
    assert drawn_axes["plot_1d"][-1].get_xlim() == (-1.0, 1.5)
    assert_not_blank("line.h5_1d_loss_acc.png")


def test_plot_prefix_overlays_one_line_per_file(workdir, capsys, drawn_axes):
    from landscape.io import save_surface

    for idx, shift in ((2, -0.3), (3, 0.0), (4, 0.4)):
        save_surface(f"rnd_{idx}.h5", line_surface(shift))
    code = run(
        "plot", "--prefix", "rnd", "--idx_min", "2", "--idx_max", "4",
        "--xmin", "-0.5", "--xmax", "0.5", "--loss_max", "3",
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert_not_blank("rnd_1d_loss_err_repeat.png")
    ax = drawn_axes["plot_1d_repeat"][-1]
    assert ax.get_xlim() == (-0.5, 0.5) and ax.get_ylim() == (0, 3)
    train = [line for line in ax.lines if line.get_label().startswith("train loss")]
    assert [line.get_label() for line in train] == [f"train loss [{i}]" for i in (2, 3, 4)]
    assert len(ax.lines) == 6  # train and test loss of each of the 3 files
    (acc_ax,) = [other for other in ax.figure.axes if other is not ax]
    assert len(acc_ax.lines) == 6 and acc_ax.get_ylim() == (0, 100)
    minima = [line.get_xdata()[np.argmin(line.get_ydata())] for line in train]
    np.testing.assert_allclose(minima, [-0.3, 0.0, 0.4])  # each file's own curve
    for line in ax.lines + acc_ax.lines:
        assert np.isfinite(line.get_ydata()).all()

    # default limits: the files' own range; --output moves the figure
    assert (
        run("plot", "--prefix", "rnd", "--idx_min", "2", "--idx_max", "4", "--output", "o/r") == 0
    )
    assert drawn_axes["plot_1d_repeat"][-1].get_xlim() == (-1.0, 1.5)
    assert_not_blank("o/r_1d_loss_err_repeat.png")

    # a missing file (loss-landscape's default --idx_min is 1) is a clear one-line error
    code = run("plot", "--prefix", "rnd", "--idx_max", "4")
    assert_one_line_error(capsys, code, 1, "rnd_1.h5", "--idx_min")
    assert_one_line_error(capsys, run("plot"), 1, "--surf_file", "--prefix")


def test_plot_zlim_sets_the_top_of_the_3d_surface(workdir, capsys, drawn_axes):
    from landscape import Surface
    from landscape.io import save_surface

    x, y = np.linspace(-1, 1, 9), np.linspace(-1, 1, 7)
    loss = 0.1 + np.add.outer(y**2, x**2)  # 0.1 .. 2.1
    done = np.ones(loss.shape, bool)
    save_surface("plane.h5", Surface(x=x, y=y, metrics={"train_loss": loss}, done=done))
    assert run("plot", "--surf_file", "plane.h5", "--zlim", "5") == 0
    assert_not_blank("plane.h5_train_loss_3dsurface.png")
    ax = drawn_axes["plot_surface_3d"][-1]
    assert ax.get_zlim()[1] == 5.0
    assert run("plot", "--surf_file", "plane.h5") == 0  # default: the data's range
    assert drawn_axes["plot_surface_3d"][-1].get_zlim()[1] < 3.0
