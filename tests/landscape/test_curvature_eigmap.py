"""landscape.curvature.eigmap: the largest and smallest Hessian eigenvalues over a grid.

On the tests' small models (``_factories``: 256 samples, <= 5 x 5 grids): the centre equals
the direct Lanczos eigenvalues, an off-centre point equals the eigenvalues of the model moved
there by hand (so the ``(ny, nx)`` orientation is loss-landscape's), the HDF5 file has
loss-landscape's keys, an interrupted run resumes to the same file computing only the missing
points, and bad input gets a clear error.
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

pytest.importorskip("h5py")

import landscape  # noqa: E402
from landscape.curvature import (  # noqa: E402
    DenseOperator,
    EigenMap,
    HessianOperator,
    eigenvalue_map,
    load_eigenvalue_map,
    smallest_eigenvalue,
    top_eigenvalues,
)
from landscape.curvature.eigmap import extreme_eigenvalues  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "_factories", Path(__file__).resolve().parent / "_factories.py"
)
factories = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(factories)

X = np.array([-0.5, 0.0, 0.5])
Y = np.array([0.0, 0.4])
TOL = 1e-5


@pytest.fixture(scope="module")
def setting():
    torch.manual_seed(0)
    model = factories.mlp()
    directions = landscape.create_directions(model, seed=0)
    return model, directions, factories.data()


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_extreme_eigenvalues_of_an_explicit_matrix():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(30, 30, generator=generator, dtype=torch.float64)
    matrix = (a + a.T) / 2
    exact = torch.linalg.eigvalsh(matrix)
    values = extreme_eigenvalues(DenseOperator(matrix), tol=1e-10)
    assert values["max_eig"] == pytest.approx(float(exact[-1]), rel=1e-9)
    assert values["min_eig"] == pytest.approx(float(exact[0]), rel=1e-9)
    assert values["converged"] == 1.0 and 1 <= values["hvp_count"] <= 30


def test_map_equals_direct_eigenvalues_and_has_the_layout(setting, tmp_path):
    model, directions, data = setting
    before = state(model)
    messages = []
    path = tmp_path / "eig.h5"
    emap = eigenvalue_map(
        model, directions, data, X, Y, tol=TOL, out=path, progress=False, log=messages.append
    )
    for name, tensor in model.state_dict().items():  # the centre is written back, bitwise
        assert torch.equal(tensor, before[name]), name
    assert isinstance(emap, EigenMap) and emap.shape == (2, 3) and emap.done.all()
    assert messages[0].startswith("eigenvalue map: 6 of 6 points to compute")
    assert "estimated total" in messages[1]

    # The centre (x = 0, y = 0: row 0, column 1) is the direct Lanczos result.
    op = HessianOperator(model, data)
    top, low = top_eigenvalues(op, tol=TOL), smallest_eigenvalue(op, tol=TOL)
    assert emap.max_eig[0, 1] == pytest.approx(top.eigenvalues[0], rel=1e-4)
    assert emap.min_eig[0, 1] == pytest.approx(low.eigenvalues[0], rel=1e-4)
    assert emap.train_loss[0, 1] == pytest.approx(op.loss(), rel=1e-6)
    assert np.all(emap.max_eig_residual <= TOL) and np.all(emap.min_eig_residual <= TOL)
    assert np.all(emap.max_eig > emap.min_eig)

    # element [i, j] is (x[j], y[i]): move a copy by hand to (0.5, 0.4).
    moved = copy.deepcopy(model)
    with torch.no_grad():
        for name, parameter in moved.named_parameters():
            if name in directions.x:
                parameter += 0.5 * directions.x[name] + 0.4 * directions.y[name]
    op = HessianOperator(moved, data)
    assert emap.max_eig[1, 2] == pytest.approx(top_eigenvalues(op, tol=TOL).eigenvalues[0], 1e-4)
    assert emap.min_eig[1, 2] == pytest.approx(
        smallest_eigenvalue(op, tol=TOL).eigenvalues[0], rel=1e-4
    )

    import h5py

    with h5py.File(path, "r") as f:
        for key in ("xcoordinates", "ycoordinates", "max_eig", "min_eig", "done", "train_loss"):
            assert key in f, key
        assert f["max_eig"].shape == (2, 3) and f["done"][()].all()
        np.testing.assert_array_equal(f["xcoordinates"][()], X)
        assert f.attrs["kind"] == "hessian_eigenvalue_map" and f.attrs["eig_tol"] == TOL
    loaded = load_eigenvalue_map(path)
    np.testing.assert_array_equal(loaded.max_eig, emap.max_eig)
    centre_sha = HessianOperator(model, data, mode="reverse").model_sha256
    assert loaded.path == str(path) and loaded.provenance["model_sha256"] == centre_sha
    np.testing.assert_allclose(emap.ratio, np.abs(emap.min_eig / emap.max_eig))
    with pytest.raises(ValueError):
        emap.max_eig[0, 0] = 1.0  # frozen arrays


class FlakyLoss:
    """Cross-entropy that raises KeyboardInterrupt after ``fail_after`` calls (0: never)."""

    def __init__(self):
        self.calls, self.fail_after = 0, 0

    def __call__(self, outputs, targets):
        self.calls += 1
        if self.fail_after and self.calls > self.fail_after:
            raise KeyboardInterrupt("interrupted")
        return F.cross_entropy(outputs, targets)


def test_interrupted_run_resumes_to_the_same_file(setting, tmp_path):
    model, directions, data = setting
    loss = FlakyLoss()
    options = dict(loss=loss, tol=1e-4, progress=False, subset=128, subset_seed=1)
    full = eigenvalue_map(model, directions, data, X, Y, out=tmp_path / "full.h5", **options)

    loss.calls, loss.fail_after = 0, loss.calls // 2  # dies in the middle of the map
    path = tmp_path / "resumed.h5"
    with pytest.raises(KeyboardInterrupt):
        eigenvalue_map(model, directions, data, X, Y, out=path, **options)
    partial = load_eigenvalue_map(path)
    done = int(partial.done.sum())
    assert 1 <= done < 6
    np.testing.assert_array_equal(partial.max_eig[partial.done], full.max_eig[partial.done])
    assert np.isnan(partial.max_eig[~partial.done]).all()

    loss.fail_after, messages = 0, []
    resumed = eigenvalue_map(
        model, directions, data, X, Y, out=path, log=messages.append, **options
    )
    assert messages[0].startswith(f"eigenvalue map: {6 - done} of 6 points to compute")
    assert resumed.done.all()
    for name in ("max_eig", "min_eig", "train_loss", "hvp_count"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(full, name))
    import h5py

    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["train_indices"][()], np.sort(f["train_indices"][()]))

    # A different tolerance is a different map: no silent resume.
    with pytest.raises(ValueError, match="cannot resume.*eig_tol"):
        eigenvalue_map(model, directions, data, X, Y, out=path, **{**options, "tol": 1e-2})


def test_one_dimensional_map_and_plots(setting, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from landscape.plot.eigmap import plot_eig_ratio, plot_max_eig

    model, directions, data = setting
    line = landscape.create_directions(model, seed=1, ndim=1)
    emap = eigenvalue_map(model, line, data, X, tol=1e-3, progress=False, log=None, mode="forward")
    assert emap.shape == (3,) and emap.y is None and emap.done.all()
    assert plot_eig_ratio(emap).get_lines() and plot_max_eig(emap).get_lines()
    plane = eigenvalue_map(model, directions, data, X, Y, tol=1e-3, progress=False, log=None)
    assert plot_eig_ratio(plane) is not None and plot_max_eig(plane) is not None


def test_bad_input_gets_a_clear_error(setting, tmp_path):
    model, directions, data = setting
    line = landscape.create_directions(model, seed=1, ndim=1)
    options = dict(progress=False, log=None)
    with pytest.raises(ValueError, match="need the y coordinates"):
        eigenvalue_map(model, directions, data, X, **options)
    with pytest.raises(ValueError, match="take no y"):
        eigenvalue_map(model, line, data, X, Y, **options)
    with pytest.raises(ValueError, match="finite"):
        eigenvalue_map(model, line, data, [0.0, np.nan], **options)
    with pytest.raises(ValueError, match="tol"):
        eigenvalue_map(model, line, data, X, tol=0.0, **options)
    with pytest.raises(ValueError, match="bn_mode"):
        eigenvalue_map(model, line, data, X, bn_mode="train", **options)
    with pytest.raises(TypeError, match="nn.Module"):
        eigenvalue_map("model", line, data, X, **options)
    with pytest.raises(TypeError, match="Directions"):
        eigenvalue_map(model, {"x": 1}, data, X, **options)
    with pytest.raises(ValueError, match="empty"):
        eigenvalue_map(model, line, factories.empty(), X, **options)
    with pytest.raises(ValueError, match="not an eigenvalue map"):
        EigenMap.from_surface(landscape.Surface(x=X, y=None, metrics={}, done=np.ones(3)))
