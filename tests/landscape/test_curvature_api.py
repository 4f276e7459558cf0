"""landscape.curvature's one-call API on (model, data) against exact linear algebra on tiny
float64 models; eigenvector direction files against a second finite difference of the loss;
the spectrum plots."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import landscape  # noqa: E402
from landscape.curvature import (  # noqa: E402
    HessianOperator,
    eigenvalue_ratio,
    eigenvector_directions,
    hessian_density,
    hessian_eigenvalues,
    hessian_smallest_eigenvalue,
    hessian_top_eigenvalue,
    hessian_trace,
    hessian_vector_product,
    layer_eigenvalues,
    smallest_eigenvalue,
    top_eigenvalues,
)
from landscape.plot import plot_convergence, plot_density, save_spectrum  # noqa: E402

DOUBLE = torch.float64


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).to(DOUBLE)


def tiny_data(count: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(count, 4, generator=generator, dtype=DOUBLE)
    return inputs, torch.randint(0, 3, (count,), generator=generator)


@pytest.fixture(scope="module")
def problem(dense_hessian):
    model, data = tiny_model(), tiny_data()
    hessian = dense_hessian(model, *data)
    return model, data, hessian, torch.linalg.eigvalsh(hessian)


@pytest.mark.parametrize("method", ["lanczos", "power"])
def test_eigenvalues_match_eigvalsh(problem, method):
    model, data, _, exact = problem
    top = hessian_eigenvalues(model, data, k=3, method=method, tol=1e-10, max_iter=200)
    assert top.converged and all(r <= 1e-10 for r in top.residuals)
    np.testing.assert_allclose(top.eigenvalues, exact.flip(0)[:3].numpy(), rtol=1e-7)
    assert top.provenance["algorithm"] == method and top.provenance["samples"] == 24
    assert eigenvalue_ratio(top) == pytest.approx(float(exact[-1] / exact[-3]), rel=1e-7)
    assert eigenvalue_ratio(top, 1) == 1.0
    bottom = hessian_smallest_eigenvalue(model, data, tol=1e-10)
    assert bottom.eigenvalues[0] == pytest.approx(float(exact[0]), rel=1e-7)


def test_trace_and_density_match_the_exact_spectrum(problem):
    model, data, hessian, exact = problem
    n = hessian.shape[0]
    # Hutch++ with a sketch of the whole space (k = n) computes the trace exactly
    result = hessian_trace(model, data, products=3 * n + 2)
    assert result.trace == pytest.approx(float(hessian.trace()), rel=1e-9, abs=1e-12)
    assert result.method == "hutch++" and result.hvp_count == 3 * n + 2
    rough = hessian_trace(model, data, method="hutchinson", products=40, seed=3)
    assert abs(rough.trace - float(hessian.trace())) < 5 * rough.stderr
    density = hessian_density(model, data, probes=3, steps=n, seed=0)
    assert density.moments(0)[0] == pytest.approx(1.0, abs=1e-6)
    # n steps: the quadrature is exact for every polynomial; only the probes are random
    assert density.moments(1, smoothed=False)[1] == pytest.approx(float(exact.mean()), abs=0.05)


def test_layer_eigenvalues_equal_the_dense_blocks(problem):
    model, data, hessian, _ = problem
    found = layer_eigenvalues(model, data, k=2, tol=1e-10)
    assert list(found) == ["0", "2"]
    op = HessianOperator(model, data)
    for name, block in op.blocks("module"):
        exact = torch.linalg.eigvalsh(hessian[block, block]).flip(0)[:2]
        np.testing.assert_allclose(found[name].eigenvalues, exact.numpy(), rtol=1e-7)
    per_tensor = layer_eigenvalues(op, by="parameter", k=1, tol=1e-10)
    for name, block in op.blocks("parameter"):
        exact = float(torch.linalg.eigvalsh(hessian[block, block])[-1])
        assert per_tensor[name].eigenvalues[0] == pytest.approx(exact, rel=1e-7)


def test_bad_inputs_name_the_fix(problem):
    model, data, hessian, _ = problem
    with pytest.raises(ValueError, match="lower k to at most 43"):
        hessian_eigenvalues(model, data, k=44)
    frozen = tiny_model().requires_grad_(False)
    with pytest.raises(ValueError, match="requiring grad"):
        hessian_eigenvalues(frozen, data)
    with pytest.raises(ValueError, match="scalar"):
        hessian_trace(model, data, loss=lambda out, y: F.cross_entropy(out, y, reduction="none"))
    empty = (torch.zeros(0, 4, dtype=DOUBLE), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="no samples"):
        hessian_density(model, empty)
    with pytest.raises(ValueError, match="nn.Module"):
        hessian_eigenvalues("model", data)


def test_top_eigenvector_direction_file_gives_the_curvature(problem, tmp_path):
    model, data, _, exact = problem
    op = HessianOperator(model, data)
    top = top_eigenvalues(op, 1, tol=1e-10, return_vectors=True)
    bottom = smallest_eigenvalue(op, tol=1e-10, return_vectors=True)
    directions = eigenvector_directions(op, top, bottom=bottom)
    assert directions.meta["xnorm"] == "none" and directions.meta["normalisation"] == "none"
    x = torch.cat([t.reshape(-1) for t in directions.x.values()]).double()
    y = torch.cat([t.reshape(-1) for t in directions.y.values()]).double()
    assert float(x.norm()) == pytest.approx(1.0, abs=1e-6) and abs(float(x @ y)) < 1e-6
    path = landscape.save_directions(tmp_path / "hessian.h5", directions)
    loaded = landscape.load_directions(path, model)
    line = landscape.Directions(x=loaded.x, y=None, dir_type="weights", meta=loaded.meta)
    h = 1e-3
    surface = landscape.surface_1d(model, line, data, x=np.array([-h, 0.0, h]), progress=False)
    loss = surface.metrics["train_loss"]
    second = (loss[0] - 2 * loss[1] + loss[2]) / h**2
    assert second == pytest.approx(top.eigenvalues[0], rel=1e-4)
    assert top.eigenvalues[0] == pytest.approx(float(exact[-1]), rel=1e-8)


def test_directions_zero_unselected_tensors_and_check_their_input(problem):
    model, data, _, _ = problem
    op = HessianOperator(model, data, params=["2.weight"])
    top = top_eigenvalues(op, 2, tol=1e-8, return_vectors=True)
    directions = eigenvector_directions(op, top, which=(0, 1))
    assert list(directions.x) == [name for name, _ in model.named_parameters()]
    assert all(float(directions.x[n].abs().sum()) == 0 for n in ("0.weight", "0.bias", "2.bias"))
    assert directions.ndim == 2 and abs(directions.meta["cosine"]) < 1e-6
    with pytest.raises(ValueError, match="return_vectors=True"):
        eigenvector_directions(op, top_eigenvalues(op, 1))
    with pytest.raises(ValueError, match="indices 0..1"):
        eigenvector_directions(op, top, which=5)


def test_the_0_2_api_runs_on_the_operator(problem):
    model, data, hessian, exact = problem
    eig = hessian_top_eigenvalue(
        model,
        [(data[0][:10], data[1][:10]), (data[0][10:], data[1][10:])],
        F.cross_entropy,
        tol=1e-10,
        iters=100,
    )
    assert eig.converged and eig.eigenvalue == pytest.approx(float(exact[-1]), rel=1e-8)
    assert eig.iterations == len(eig.history) and eig.relative_change <= 1e-10
    params = list(model.parameters())[::-1]  # any order of the model's parameters
    vector = [torch.randn(p.shape, dtype=DOUBLE) for p in params]
    product = hessian_vector_product(model, params, [data], F.cross_entropy, vector)
    flat_v = torch.cat([v.reshape(-1) for v in vector[::-1]])
    expected = hessian @ flat_v
    got = torch.cat([p.reshape(-1) for p in product[::-1]])
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="parameters of model"):
        hessian_vector_product(model, [torch.zeros(3)], [data], F.cross_entropy, [vector[0]])


def test_spectrum_plots(problem, tmp_path):
    model, data, _, _ = problem
    one = hessian_density(model, data, probes=2, steps=10, seed=0)
    two = hessian_density(model, data, probes=2, steps=10, seed=1)
    ax = plot_density([one, two], ["a", "b"], log=True)
    assert ax.get_yscale() == "log" and len(ax.get_lines()) == 2
    axes = plot_density([one, two], ["a", "b"], overlay=False)
    assert len(axes) == 2 and axes[1].get_title() == "b"
    top = hessian_eigenvalues(model, data, k=2, tol=1e-8)
    trace = hessian_trace(model, data, method="hutchinson", products=10)
    ax = plot_convergence([top, trace], ["lambda_1", "trace"])
    assert len(ax.get_lines()) == 4  # a curve and its final value each
    plot_convergence(top, relative=True)
    path = save_spectrum(tmp_path / "density.png", [one, two], ["a", "b"], overlay=False)
    assert path.stat().st_size > 0
    with pytest.raises(ValueError, match="labels"):
        plot_density([one, two], ["a"])
