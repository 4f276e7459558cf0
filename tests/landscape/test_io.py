"""landscape.io: HDF5 round trips, resume, loss-landscape files, bad files and VTK export."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

from landscape import Surface  # noqa: E402
from landscape.evaluate import hash_indices  # noqa: E402
from landscape.io import (  # noqa: E402
    SCHEMA_VERSION,
    SurfaceWriter,
    export_vtp,
    load_surface,
    save_surface,
    surface_progress,
)

METRICS = ("train_loss", "train_acc", "train_loss_se", "train_acc_se")


def provenance(**changes):
    """Provenance shaped like SurfaceEvaluator.provenance (plus a few odd types)."""
    base = {
        "directions": {"kind": "random", "seed": 3, "xnorm": "filter", "xignore": "biasbn"},
        "directions_sha256": "d0e1f2",
        "dir_type": "weights",
        "loss_name": "crossentropy",
        "bn_mode": "eval",
        "subset": 512,
        "subset_seed": 0,
        "train_size": 512,
        "train_indices_sha256": "5ca1ab1e",
        "model_sha256": "0123abcd",
        "model_class": "Net",
        "dtype": "float32",
        "batch_size": 128,
        "mode": "eager",
        "device": "cpu",
        "execution": {"mode_requested": "auto"},
        "torch_version": "2.14.1",
        "numpy_version": "2.4.6",
        "landscape_version": "0.1.0",
        "orthogonalized": False,
        "cosine": 0.0123456789012345,
        "explained_variance_ratio": [0.625, 0.25],
        "note": None,
        "dir_file": "model.pt_weights.h5",
    }
    base.update(changes)
    return base


def make_surface(nx=5, ny=3, *, seed=0, partial=True):
    """A surface with random bits (non-square in 2D), some points not done."""
    rng = np.random.default_rng(seed)
    x = np.linspace(-1.0, 1.0, nx)
    y = None if ny is None else np.linspace(-0.5, 0.75, ny)
    shape = (nx,) if y is None else (ny, nx)
    done = rng.random(shape) > 0.3 if partial else np.ones(shape, bool)
    metrics = {}
    for name in METRICS:
        values = rng.random(shape) * (1.0 if "acc" in name else 3.0)
        values[~done] = np.nan
        metrics[name] = values
    return Surface(x=x, y=y, metrics=metrics, done=done, provenance=provenance())


def bits(array):
    return np.ascontiguousarray(array, dtype=np.float64).view(np.uint64)


def assert_same_surface(a, b):
    assert bits(a.x).tolist() == bits(b.x).tolist()
    if a.y is None:
        assert b.y is None
    else:
        assert bits(a.y).tolist() == bits(b.y).tolist()
    assert sorted(a.metrics) == sorted(b.metrics)
    for name in a.metrics:
        assert a.metrics[name].shape == b.metrics[name].shape
        assert a.metrics[name].dtype == np.float64 == b.metrics[name].dtype
        np.testing.assert_array_equal(bits(a.metrics[name]), bits(b.metrics[name]))
    assert a.done.dtype == bool and b.done.dtype == bool
    np.testing.assert_array_equal(a.done, b.done)
    assert a.provenance == b.provenance


# --------------------------------------------------------------------------------------------
# save / load
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ny", [None, 3], ids=["1d", "2d-nonsquare"])
def test_round_trip_is_bit_exact(tmp_path, ny):
    surface = make_surface(nx=5, ny=ny)
    path = save_surface(tmp_path / "surface.h5", surface)
    loaded = load_surface(path)
    assert_same_surface(surface, loaded)
    assert loaded.shape == surface.shape

    with h5py.File(path, "r") as f:
        assert f.attrs["schema_version"] == SCHEMA_VERSION
        assert f.attrs["acc_units"] == "fraction"
        assert f["train_loss"].shape == ((5,) if ny is None else (3, 5))
        assert f["train_loss"].chunks is not None
        assert f["done"].dtype == np.uint8
        assert f["dir_file"][()].decode() == "model.pt_weights.h5"
        assert f.attrs["dir_file"] == "model.pt_weights.h5"
        assert ("ycoordinates" in f) == (ny is not None)


def test_save_never_overwrites_without_flag(tmp_path):
    path = tmp_path / "surface.h5"
    save_surface(path, make_surface(seed=0))
    with pytest.raises(FileExistsError, match="overwrite"):
        save_surface(path, make_surface(seed=1))
    assert_same_surface(load_surface(path), make_surface(seed=0))
    save_surface(path, make_surface(seed=1), overwrite=True)
    assert_same_surface(load_surface(path), make_surface(seed=1))
    assert [p.name for p in tmp_path.iterdir()] == ["surface.h5"]  # no temporary left


# --------------------------------------------------------------------------------------------
# SurfaceWriter: create, resume, overwrite
# --------------------------------------------------------------------------------------------


def open_writer(path, *, x=None, y=None, overwrite=False, sample_indices=None, **changes):
    x = np.linspace(-1, 1, 7) if x is None else x
    y = np.linspace(-1, 1, 4) if y is None else y
    return SurfaceWriter.open(
        path,
        x=x,
        y=y,
        metric_names=METRICS,
        provenance=provenance(**changes),
        overwrite=overwrite,
        sample_indices=sample_indices,
    )


def fake_metrics(indices):
    indices = np.asarray(indices, dtype=np.float64)
    return {name: indices * (k + 1) + 0.5 for k, name in enumerate(METRICS)}


def test_new_file_is_nan_filled_and_not_done(tmp_path):
    path = tmp_path / "s.h5"
    with open_writer(path) as writer:
        assert writer.shape == (4, 7)
        np.testing.assert_array_equal(writer.todo(), np.arange(28))
    surface = load_surface(path)
    assert surface.shape == (4, 7)
    assert not surface.done.any()
    for name in METRICS:
        assert np.isnan(surface.metrics[name]).all()


def test_resume_computes_exactly_the_other_half(tmp_path):
    path = tmp_path / "s.h5"
    writer = open_writer(path)
    first = np.arange(0, 28, 2)  # every other flat index, in two chunks
    writer.write(first[:7], fake_metrics(first[:7]))
    writer.write(first[7:], fake_metrics(first[7:]))
    writer.close()

    # Non-identity entries (batch size, evaluation mode, versions) may change.
    changes = dict(
        batch_size=64,
        mode="vmap",
        device="cuda",
        execution={"mode_requested": "vmap", "points_per_call": 8, "cudnn_allow_tf32": False},
        torch_version="9.9",
    )
    with open_writer(path, **changes) as writer:
        np.testing.assert_array_equal(writer.todo(), np.arange(1, 28, 2))
        rest = writer.todo()
        writer.write(rest, fake_metrics(rest))
        assert writer.todo().size == 0

    surface = load_surface(path)
    assert surface.done.all()
    ny, nx = surface.shape
    for k, name in enumerate(METRICS):
        expected = (np.arange(ny * nx) * (k + 1) + 0.5).reshape(ny, nx)
        np.testing.assert_array_equal(surface.metrics[name], expected)
    # The file keeps the provenance it was created with.
    assert surface.provenance["batch_size"] == 128


def test_killed_run_keeps_flushed_chunks(tmp_path):
    """A process that dies without closing loses nothing written before the kill.

    The same fresh process checks that importing landscape.io and landscape.plot loads
    neither h5py nor matplotlib nor samlab (they are imported inside the functions).
    """
    path = tmp_path / "s.h5"
    open_writer(path).close()
    script = textwrap.dedent(
        f"""
        import os, sys
        import numpy as np
        import landscape.io, landscape.plot
        heavy = [m for m in ("h5py", "matplotlib", "samlab") if m in sys.modules]
        if heavy:
            sys.exit(f"imported at module level: {{heavy}}")
        writer = landscape.io.SurfaceWriter.open(
            {str(path)!r}, x=np.linspace(-1, 1, 7), y=np.linspace(-1, 1, 4),
            metric_names={METRICS!r}, provenance={provenance()!r})
        idx = np.arange(10)
        writer.write(idx, {{n: idx + 0.25 for n in {METRICS!r}}})
        os._exit(0)  # no close, no atexit
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    with open_writer(path) as writer:
        np.testing.assert_array_equal(writer.todo(), np.arange(10, 28))
        np.testing.assert_array_equal(
            writer.surface().metrics["train_loss"].reshape(-1)[:10], np.arange(10) + 0.25
        )


def test_surface_progress_follows_a_file_another_process_is_writing(tmp_path):
    """A running job keeps its surface file open: ``load_surface`` is refused by HDF5's lock,
    ``surface_progress`` reads the ``done`` mask after every chunk the writer flushes, and
    ``load_surface(wait=)`` waits for the writer to let the file go."""
    path = tmp_path / "s.h5"
    assert surface_progress(path) is None  # not created yet
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        import landscape.io
        writer = landscape.io.SurfaceWriter.open(
            {str(path)!r}, x=np.linspace(-1, 1, 7), y=np.linspace(-1, 1, 4),
            metric_names={METRICS!r}, provenance={provenance()!r})
        for chunk in (np.arange(10), np.arange(10, 13)):
            writer.write(chunk, {{n: chunk + 0.25 for n in {METRICS!r}}})
            print("written", flush=True)
            sys.stdin.readline()
        writer.close()
        """
    )
    job = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert job.stdout.readline().strip() == "written"
        with pytest.raises(ValueError, match="open in another process"):
            load_surface(path)
        progress = surface_progress(path)
        assert progress == (10, 28) and progress.fraction == pytest.approx(10 / 28)
        job.stdin.write("\n")
        job.stdin.flush()
        assert job.stdout.readline().strip() == "written"
        assert surface_progress(path) == (13, 28)
        job.stdin.write("\n")
        job.stdin.flush()
        # the writer lets the file go a moment later: load_surface(wait=) waits for it
        assert int(load_surface(path, wait=60).done.sum()) == 13
        assert job.wait(timeout=60) == 0
    finally:
        job.kill()
    with pytest.raises(ValueError, match="wait must be >= 0"):
        load_surface(path, wait=-1)


def test_surface_progress_of_a_foreign_or_damaged_file(tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as h5file:
        h5file["x"] = np.zeros(3)
    with pytest.raises(ValueError, match="not a landscape surface file"):
        surface_progress(other)
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not hdf5 at all" * 10)
    with pytest.raises(ValueError, match="garbage.h5 is damaged"):
        surface_progress(garbage, retries=1, wait_s=0.0)


@pytest.mark.parametrize(
    "change, key",
    [
        (dict(x=np.linspace(-1, 1, 9)), "xcoordinates"),
        (dict(y=np.linspace(-2, 2, 4)), "ycoordinates"),
        (dict(directions_sha256="ffffff"), "directions_sha256"),
        (dict(model_sha256="other"), "model_sha256"),
        (dict(bn_mode="recompute"), "bn_mode"),
        (dict(loss_name="mse"), "loss_name"),
        (dict(train_indices_sha256="0ther"), "train_indices_sha256"),
        (dict(subset=256), "subset"),
        (dict(directions={"kind": "random", "seed": 4}), "directions"),
    ],
)
def test_resume_with_other_grid_or_identity_raises(tmp_path, change, key):
    path = tmp_path / "s.h5"
    with open_writer(path) as writer:
        writer.write([0, 1], fake_metrics([0, 1]))
    with pytest.raises(ValueError, match="--overwrite") as info:
        open_writer(path, **change)
    assert key in str(info.value)
    assert str(path) in str(info.value)
    # The file is untouched and still resumable.
    with open_writer(path) as writer:
        assert writer.todo().size == 26


def test_resume_with_other_metrics_raises(tmp_path):
    path = tmp_path / "s.h5"
    open_writer(path).close()
    with pytest.raises(ValueError, match="metric_names.*--overwrite"):
        SurfaceWriter.open(
            path,
            x=np.linspace(-1, 1, 7),
            y=np.linspace(-1, 1, 4),
            metric_names=("train_loss",),
            provenance=provenance(),
        )


def test_overwrite_replaces(tmp_path):
    path = tmp_path / "s.h5"
    with open_writer(path) as writer:
        writer.write(np.arange(28), fake_metrics(np.arange(28)))
    with open_writer(path, x=np.linspace(0, 1, 3), model_sha256="new", overwrite=True) as writer:
        assert writer.shape == (4, 3)
        np.testing.assert_array_equal(writer.todo(), np.arange(12))
    surface = load_surface(path)
    assert surface.provenance["model_sha256"] == "new"
    assert not surface.done.any()


def test_write_validates_its_input(tmp_path):
    with open_writer(tmp_path / "s.h5") as writer:
        with pytest.raises(ValueError, match="out of range"):
            writer.write([28], fake_metrics([28]))
        with pytest.raises(ValueError, match="missing"):
            writer.write([0], {"train_loss": [1.0]})
        with pytest.raises(ValueError, match="values for"):
            writer.write([0, 1], {name: [1.0] for name in METRICS})
        assert writer.todo().size == 28
    with pytest.raises(ValueError, match="closed"):
        writer.write([0], fake_metrics([0]))


def test_writer_1d(tmp_path):
    path = tmp_path / "s1.h5"
    x = np.linspace(-1, 1, 11)
    with SurfaceWriter.open(
        path, x=x, y=None, metric_names=("train_loss",), provenance={"seed": 1}
    ) as writer:
        writer.write([3, 4, 5], {"train_loss": [0.3, 0.4, 0.5]})
        np.testing.assert_array_equal(writer.todo(), np.r_[0:3, 6:11])
    surface = load_surface(path)
    assert surface.y is None and surface.shape == (11,)
    np.testing.assert_array_equal(surface.done, np.isin(np.arange(11), [3, 4, 5]))
    np.testing.assert_array_equal(surface.metrics["train_loss"][3:6], [0.3, 0.4, 0.5])


# --------------------------------------------------------------------------------------------
# loss-landscape files
# --------------------------------------------------------------------------------------------


def true_loss(a, b):
    return a**2 + 3 * b**2  # exactly 0 at the centre, which must count as done


def write_loss_landscape_file(path, x, y, computed):
    """Write a surface file the way tomgoldstein/loss-landscape's plot_surface.py does."""
    with h5py.File(path, "a") as f:
        f["dir_file"] = "model_300.t7_weights_xignore=biasbn_xnorm=filter.h5"
        f["xcoordinates"] = x
        if y is not None:
            f["ycoordinates"] = y
        shape = x.shape if y is None else (len(x), len(y))  # allocated (nx, ny)
        losses = -np.ones(shape=shape)
        accuracies = -np.ones(shape=shape)
        # scheduler.get_job_indices: coordinates of flat index k from meshgrid(x, y).
        if y is None:
            coords = x
        else:
            xmesh, ymesh = np.meshgrid(x, y)
            coords = np.c_[xmesh.ravel(), ymesh.ravel()]
        for ind in computed:
            a, b = (coords[ind], 0.0) if y is None else coords[ind]
            losses.ravel()[ind] = true_loss(a, b)
            accuracies.ravel()[ind] = 100.0 - 10 * true_loss(a, b)  # in %
        f["train_loss"] = losses
        f["train_acc"] = accuracies


def test_reads_loss_landscape_2d_nonsquare(tmp_path):
    path = tmp_path / "ll.h5"
    x = np.linspace(-1, 1, 5)
    y = np.linspace(-0.5, 0.5, 3)
    computed = [0, 1, 2, 3, 4, 5, 6, 7, 9, 11]  # 15 points; centre is flat index 7
    write_loss_landscape_file(path, x, y, computed)
    surface = load_surface(path)

    assert surface.shape == (3, 5)
    assert surface.provenance["dir_file"].startswith("model_300.t7")
    assert surface.provenance["source_format"] == "loss-landscape"
    expected_done = np.isin(np.arange(15), computed).reshape(3, 5)
    np.testing.assert_array_equal(surface.done, expected_done)
    for i in range(3):
        for j in range(5):
            loss = surface.metrics["train_loss"][i, j]
            acc = surface.metrics["train_acc"][i, j]
            if expected_done[i, j]:
                assert loss == true_loss(x[j], y[i])
                assert acc == pytest.approx((100 - 10 * true_loss(x[j], y[i])) / 100)
            else:
                assert np.isnan(loss) and np.isnan(acc)
    assert surface.done[1, 2] and surface.metrics["train_loss"][1, 2] == 0.0  # true zero loss
    # Flat order agrees with Surface.coordinates().
    coords = surface.coordinates()
    flat = surface.metrics["train_loss"].reshape(-1)
    for k in computed:
        assert flat[k] == true_loss(*coords[k])


def test_reads_loss_landscape_1d(tmp_path):
    path = tmp_path / "ll1.h5"
    x = np.linspace(-1, 1, 7)
    write_loss_landscape_file(path, x, None, [0, 1, 2, 3])
    surface = load_surface(path)
    assert surface.y is None and surface.shape == (7,)
    np.testing.assert_array_equal(surface.done, np.arange(7) < 4)
    np.testing.assert_array_equal(surface.metrics["train_loss"][:4], true_loss(x[:4], 0.0))
    assert np.isnan(surface.metrics["train_loss"][4:]).all()
    assert surface.metrics["train_acc"][3] == pytest.approx(1.0)


def test_loss_landscape_file_is_not_resumed(tmp_path):
    path = tmp_path / "ll.h5"
    write_loss_landscape_file(path, np.linspace(-1, 1, 7), np.linspace(-1, 1, 4), [0])
    with pytest.raises(ValueError, match="--overwrite") as info:
        open_writer(path)
    assert str(path) in str(info.value)


# --------------------------------------------------------------------------------------------
# bad files
# --------------------------------------------------------------------------------------------


def corrupt_file(path):
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    return path


def foreign_file(path):
    with h5py.File(path, "w") as f:
        f["weights"] = np.arange(10.0)
    return path


@pytest.mark.parametrize("make", [corrupt_file, foreign_file], ids=["corrupt", "foreign"])
def test_bad_files_raise_value_error_naming_the_file(tmp_path, make):
    path = make(tmp_path / "bad.h5")
    before = path.read_bytes()
    with pytest.raises(ValueError) as info:
        load_surface(path)
    assert str(path) in str(info.value)
    with pytest.raises(ValueError) as info:
        open_writer(path)
    assert str(path) in str(info.value)
    assert path.read_bytes() == before  # never touched without overwrite
    with open_writer(path, overwrite=True) as writer:
        assert writer.todo().size == 28


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_surface(tmp_path / "nope.h5")


# --------------------------------------------------------------------------------------------
# VTK
# --------------------------------------------------------------------------------------------


def vtp_arrays(path):
    root = ET.parse(path).getroot()
    assert root.tag == "VTKFile" and root.attrib["type"] == "PolyData"
    piece = root.find("PolyData/Piece")
    arrays = {}
    for section in ("PointData", "CellData", "Points", "Polys"):
        for array in piece.find(section).findall("DataArray"):
            values = np.array((array.text or "").split(), dtype=np.float64)
            arrays[f"{section}/{array.attrib['Name']}"] = values
            if values.size:
                # RangeMin/RangeMax are plain numbers (not "np.float64(...)") equal to the data's.
                assert float(array.attrib["RangeMin"]) == values.min()
                assert float(array.attrib["RangeMax"]) == values.max()
    return piece.attrib, arrays


def full_quadratic_surface(nx=6, ny=4):
    x = np.linspace(-1, 1, nx)
    y = np.linspace(-0.5, 1.0, ny)
    loss = true_loss(*np.meshgrid(x, y))
    done = np.ones(loss.shape, bool)
    return Surface(x=x, y=y, metrics={"train_loss": loss}, done=done, provenance={})


def test_vtp_nonsquare_points_and_quads(tmp_path):
    surface = full_quadratic_surface(nx=6, ny=4)
    path = export_vtp(surface, tmp_path / "s.vtp")
    attrib, arrays = vtp_arrays(path)
    assert int(attrib["NumberOfPoints"]) == 24
    assert int(attrib["NumberOfPolys"]) == 15
    points = arrays["Points/Points"].reshape(-1, 3)
    assert points.shape == (24, 3)
    np.testing.assert_array_equal(arrays["PointData/train_loss"], points[:, 2])
    # Point k = i * nx + j is (x[j], y[i], z[i, j]).
    for k, (px, py, pz) in enumerate(points):
        i, j = divmod(k, 6)
        assert (px, py, pz) == (surface.x[j], surface.y[i], surface.metrics["train_loss"][i, j])
    quads = arrays["Polys/connectivity"].astype(int).reshape(-1, 4)
    assert quads.shape == (15, 4)
    np.testing.assert_array_equal(arrays["Polys/offsets"], 4 * np.arange(1, 16))
    for quad in quads:  # each quad is one grid cell
        xs, ys = points[quad, 0], points[quad, 1]
        assert len(set(xs)) == 2 and len(set(ys)) == 2
        assert np.diff(np.searchsorted(surface.x, sorted(set(xs))))[0] == 1
        assert np.diff(np.searchsorted(surface.y, sorted(set(ys))))[0] == 1
    assert arrays["CellData/averaged train_loss"].shape == (15,)


def test_vtp_zmax_log_interp(tmp_path):
    surface = full_quadratic_surface(nx=6, ny=5)
    _, arrays = vtp_arrays(export_vtp(surface, tmp_path / "a.vtp", zmax=1.0))
    assert arrays["Points/Points"].reshape(-1, 3)[:, 2].max() == 1.0

    _, arrays = vtp_arrays(export_vtp(surface, tmp_path / "b.vtp", log=True))
    z = arrays["Points/Points"].reshape(-1, 3)[:, 2]
    np.testing.assert_allclose(z, np.log(surface.metrics["train_loss"].reshape(-1) + 0.1))

    attrib, arrays = vtp_arrays(export_vtp(surface, tmp_path / "c.vtp", interp=9))
    assert int(attrib["NumberOfPoints"]) == 81 and int(attrib["NumberOfPolys"]) == 64
    points = arrays["Points/Points"].reshape(-1, 3)
    # Cubic interpolation reproduces the quadratic surface.
    np.testing.assert_allclose(points[:, 2], true_loss(points[:, 0], points[:, 1]), atol=1e-9)
    assert points[:, 0].min() == -1.0 and points[:, 1].max() == 1.0


def test_vtp_partial_surface_drops_points_not_done(tmp_path):
    surface = full_quadratic_surface(nx=4, ny=3)
    done = surface.done.copy()
    done[0, 0] = False  # removes the one quad touching the corner
    metrics = {"train_loss": np.where(done, surface.metrics["train_loss"], np.nan)}
    partial = Surface(x=surface.x, y=surface.y, metrics=metrics, done=done, provenance={})
    attrib, arrays = vtp_arrays(export_vtp(partial, tmp_path / "p.vtp"))
    assert int(attrib["NumberOfPoints"]) == 11 and int(attrib["NumberOfPolys"]) == 5
    assert np.isfinite(arrays["Points/Points"]).all()
    assert arrays["Polys/connectivity"].max() == 10
    with pytest.raises(ValueError, match="complete"):
        export_vtp(partial, tmp_path / "q.vtp", interp=10)


def test_vtp_needs_2d(tmp_path):
    with pytest.raises(ValueError, match="2D"):
        export_vtp(make_surface(ny=None), tmp_path / "x.vtp")


# --------------------------------------------------------------------------------------------
# evaluated-sample indices
# --------------------------------------------------------------------------------------------


def subset_evaluator(subset=12, test_subset=5):
    import torch
    from torch import nn

    from landscape import SurfaceEvaluator
    from landscape.directions import create_directions

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    inputs, targets = torch.randn(40, 4), torch.randint(0, 3, (40,))
    return SurfaceEvaluator(
        model,
        create_directions(model, seed=0, ndim=1),
        (inputs, targets),
        test_data=(inputs[:20], targets[:20]),
        subset=subset,
        subset_seed=3,
        test_subset=test_subset,
        mode="eager",
        forward_chunk=16,
    )


def test_subset_indices_are_stored_as_integer_datasets_and_read_back(tmp_path):
    evaluator = subset_evaluator(subset=12, test_subset=5)
    train, test = evaluator.train_indices, evaluator.test_indices
    assert sorted(evaluator.sample_indices) == ["test", "train"]
    x = np.linspace(-1, 1, 12)  # as many points as subset samples: not a metric
    path = tmp_path / "s.h5"
    with SurfaceWriter.open(
        path,
        x=x,
        y=None,
        metric_names=evaluator.metric_names,
        provenance=evaluator.provenance,
        sample_indices=evaluator.sample_indices,
    ) as writer:
        writer.write(np.arange(12), evaluator.evaluate_points(x))
        np.testing.assert_array_equal(writer.surface().train_indices, train)
    with h5py.File(path, "r") as f:
        assert np.issubdtype(f["train_indices"].dtype, np.integer)
        np.testing.assert_array_equal(f["train_indices"][()], train)
        np.testing.assert_array_equal(f["test_indices"][()], test)
        assert f.attrs["train_indices_sha256"] == evaluator.provenance["train_indices_sha256"]
    loaded = load_surface(path)
    assert sorted(loaded.metrics) == sorted(evaluator.metric_names)
    np.testing.assert_array_equal(loaded.train_indices, train)
    np.testing.assert_array_equal(loaded.test_indices, test)
    assert loaded.train_indices.dtype == np.int64


def test_surface_1d_with_subset_round_trips_its_indices(tmp_path):
    import torch
    from torch import nn

    from landscape import SurfaceEvaluator, surface_1d
    from landscape.directions import create_directions

    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 3))
    data = (torch.randn(50, 4), torch.randint(0, 3, (50,)))
    directions = create_directions(model, seed=0, ndim=1)
    surface = surface_1d(
        model, directions, data, x=np.linspace(-1, 1, 5), subset=17, subset_seed=2, progress=False
    )
    expected = SurfaceEvaluator(model, directions, data, subset=17, subset_seed=2).train_indices
    np.testing.assert_array_equal(surface.train_indices, expected)
    assert surface.test_indices is None
    loaded = load_surface(save_surface(tmp_path / "s.h5", surface))
    np.testing.assert_array_equal(loaded.train_indices, expected)
    # Without a subset nothing is stored.
    full = surface_1d(model, directions, data, x=np.linspace(-1, 1, 3), progress=False)
    assert full.sample_indices == {}
    with h5py.File(save_surface(tmp_path / "full.h5", full), "r") as f:
        assert "train_indices" not in f


def test_resume_checks_the_stored_indices(tmp_path):
    path = tmp_path / "s.h5"
    indices = np.array([3, 1, 4, 15, 9], dtype=np.int64)
    digest = hash_indices(indices)

    def writer(sample_indices, **changes):
        return open_writer(
            path, sample_indices=sample_indices, train_indices_sha256=digest, **changes
        )

    with writer({"train": indices}) as w:
        w.write([0], fake_metrics([0]))
    with writer({"train": indices}) as w:  # the same samples: resumed
        assert w.todo().size == 27
        np.testing.assert_array_equal(w.surface().train_indices, indices)
    with pytest.raises(ValueError, match="train_indices.*--overwrite"):
        writer({"train": indices[::-1].copy()})
    with pytest.raises(ValueError, match="train_indices|subset"):
        writer(None)

    # A file written before the indices were stored gains them when its sha256 matches.
    with h5py.File(path, "r+") as f:
        del f["train_indices"]
    with pytest.raises(ValueError, match="sha256"):
        writer({"train": indices + 1})
    with writer({"train": indices}) as w:
        assert w.todo().size == 27
    np.testing.assert_array_equal(load_surface(path).train_indices, indices)


def test_public_names_of_landscape_io() -> None:
    """``landscape.io``'s public names are the objects its modules define (and the same from
    ``landscape``)."""
    import landscape
    import landscape.io as io
    import landscape.io.atomic as atomic
    import landscape.io.checkpoints as checkpoints
    import landscape.io.layout as layout
    import landscape.io.surfaces as surfaces
    import landscape.io.vtk as vtk
    import landscape.io.writer as writer

    for module, names in (
        (layout, ("SCHEMA_VERSION", "NON_IDENTITY_PROVENANCE_KEYS")),
        (surfaces, ("load_surface", "save_surface", "surface_progress", "SurfaceProgress")),
        (writer, ("SurfaceWriter",)),
        (vtk, ("export_vtp",)),
        (atomic, ("AtomicWriteError", "atomic_path", "atomic_write")),
        (checkpoints, ("DIGEST_KEY", "check_checkpoint", "check_finite_weights")),
        (checkpoints, ("payload_sha256",)),
    ):
        for name in names:
            assert getattr(io, name) is getattr(module, name), name
    also_in_landscape = (
        "SurfaceWriter",
        "export_vtp",
        "load_surface",
        "save_surface",
        "surface_progress",
    )
    assert io.__all__ == [
        "SCHEMA_VERSION",
        "NON_IDENTITY_PROVENANCE_KEYS",
        *also_in_landscape,
        "SurfaceProgress",
        "AtomicWriteError",
        "atomic_path",
        "atomic_write",
        "DIGEST_KEY",
        "check_checkpoint",
        "check_finite_weights",
        "payload_sha256",
    ]
    for name in also_in_landscape:
        assert getattr(landscape, name) is getattr(io, name), name
