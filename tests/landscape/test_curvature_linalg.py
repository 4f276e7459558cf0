"""landscape.curvature's linear algebra (eigen, trace, density, results) on DenseOperator: seeded
float64 matrices of known spectrum, checked against torch.linalg.eigvalsh and exact traces."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import pickle

import numpy as np
import pytest
import torch

from landscape.curvature import (
    DenseOperator,
    DensityResult,
    EigenResult,
    TraceResult,
    hutchinson,
    hutchpp,
    smallest_eigenvalue,
    spectral_density,
    top_eigenvalues,
    xtrace,
)
from landscape.curvature.trace import trace


def _matrix(eigenvalues, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """``Q diag(eigenvalues) Q^T`` with a seeded random orthogonal ``Q``."""
    eigenvalues = torch.as_tensor(eigenvalues, dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    n = len(eigenvalues)
    basis = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64)).Q
    matrix = (basis * eigenvalues) @ basis.T
    return ((matrix + matrix.T) / 2).to(dtype)


def _hessian_like(n: int = 150, seed: int = 1) -> torch.Tensor:
    """Ten decaying outliers (100 * 0.7^i) over an indefinite bulk of width ~1, like the
    Hessian of a trained network (Papyan 2019; Ghorbani et al. 2019)."""
    generator = torch.Generator().manual_seed(seed)
    outliers = 100 * 0.7 ** torch.arange(10, dtype=torch.float64)
    bulk = 0.5 * torch.randn(n - 10, generator=generator, dtype=torch.float64)
    return _matrix(torch.cat([outliers, bulk]), seed)


def _geometric(n: int = 100, ratio: float = 0.8) -> torch.Tensor:
    return _matrix(ratio ** torch.arange(n, dtype=torch.float64), seed=3)


# --- DenseOperator --------------------------------------------------------------------------


def test_dense_operator_follows_the_protocol_and_counts_products():
    matrix = _matrix(torch.arange(1.0, 6.0))
    op = DenseOperator(matrix)
    assert (op.size, op.dtype, op.device) == (5, torch.float64, torch.device("cpu"))
    v, V = torch.ones(5, dtype=torch.float64), torch.ones(5, 3, dtype=torch.float64)
    torch.testing.assert_close(op.matvec(v), matrix @ v)
    torch.testing.assert_close(op.matmat(V), matrix @ V)
    assert op.hvp_count == 4
    assert op.provenance() == {"operator": "dense", "size": 5}
    with pytest.raises(ValueError, match="symmetric"):
        DenseOperator(torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match="square"):
        DenseOperator(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="floating"):
        DenseOperator(torch.eye(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="length 5"):
        op.matvec(torch.ones(4, dtype=torch.float64))


# --- eigenvalues ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["lanczos", "power"])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_top_eigenvalues_match_eigvalsh(method, k):
    matrix, tol = _hessian_like(), 1e-6
    exact_values, exact_vectors = torch.linalg.eigh(matrix)
    exact_values, exact_vectors = exact_values.flip(0)[:k], exact_vectors.flip(1)[:, :k]
    op = DenseOperator(matrix)
    result = top_eigenvalues(op, k, method=method, tol=tol, max_iter=2000, return_vectors=True)
    assert result.converged and result.method == method and len(result.eigenvalues) == k
    assert result.hvp_count == op.hvp_count
    # a relative residual r bounds the eigenvalue error by r |theta|
    np.testing.assert_allclose(result.eigenvalues, exact_values.numpy(), rtol=tol)
    assert max(result.residuals) <= tol
    vectors = result.vectors
    assert vectors.shape == (150, k) and vectors.dtype == torch.float64
    torch.testing.assert_close(vectors.norm(dim=0), torch.ones(k, dtype=torch.float64))
    # the reported residuals are the true ones, ||A v - theta v|| / |theta|
    theta = torch.tensor(result.eigenvalues, dtype=torch.float64)
    true_residuals = (matrix @ vectors - vectors * theta).norm(dim=0) / theta.abs()
    np.testing.assert_allclose(true_residuals.numpy(), result.residuals, rtol=0.05, atol=1e-12)
    # eigengaps here are >= 0.3 * lambda: the vectors match up to sign
    signs = torch.sign((vectors * exact_vectors).sum(dim=0))
    torch.testing.assert_close(vectors * signs, exact_vectors, atol=1e-4, rtol=0)


@pytest.mark.parametrize("method", ["lanczos", "power"])
def test_top_eigenvalues_are_algebraic_not_largest_in_magnitude(method):
    # the dominant eigenvalue is -50; the top three are 10, 4, 1
    spectrum = torch.cat([torch.tensor([-50.0, -20.0, 10.0, 4.0, 1.0]), torch.linspace(-2, 0, 55)])
    matrix = _matrix(spectrum, seed=4)
    result = top_eigenvalues(DenseOperator(matrix), 3, method=method, tol=1e-8, max_iter=3000)
    np.testing.assert_allclose(result.eigenvalues, [10.0, 4.0, 1.0], rtol=1e-8)
    if method == "power":
        assert result.provenance["shift"] < -1  # the shift trick was needed and used


def test_smallest_eigenvalue():
    matrix = _hessian_like(seed=5)
    exact = float(torch.linalg.eigvalsh(matrix)[0])
    assert exact < 0
    result = smallest_eigenvalue(DenseOperator(matrix), tol=1e-6, return_vectors=True)
    assert result.converged
    assert result.eigenvalues[0] == pytest.approx(exact, rel=1e-6)
    v = result.vectors[:, 0]
    assert float((matrix @ v - exact * v).norm()) <= 1e-5 * abs(exact)
    assert result.provenance["which"] == "smallest"


def test_lanczos_needs_fewer_products_than_power_for_top5():
    matrix, tol = _hessian_like(), 1e-4
    exact = torch.linalg.eigvalsh(matrix).flip(0)[:5].numpy()
    lanczos = top_eigenvalues(DenseOperator(matrix), 5, method="lanczos", tol=tol)
    power = top_eigenvalues(DenseOperator(matrix), 5, method="power", tol=tol, max_iter=2000)
    assert lanczos.converged and power.converged
    np.testing.assert_allclose(lanczos.eigenvalues, exact, rtol=tol)
    np.testing.assert_allclose(power.eigenvalues, exact, rtol=tol)
    assert 2 * lanczos.hvp_count < power.hvp_count  # measured: 13 against 126


def test_lanczos_breakdown_restarts_in_invariant_subspaces():
    # rank 2 (Krylov space of dimension 3) and 3 I (dimension 1): beta = 0 before k values
    generator = torch.Generator().manual_seed(0)
    factor = torch.randn(40, 2, generator=generator, dtype=torch.float64)
    low_rank = factor @ factor.T
    exact = torch.linalg.eigvalsh(low_rank).flip(0)[:3].numpy()
    result = top_eigenvalues(DenseOperator(low_rank), 3)
    assert result.provenance["restarts"] >= 1
    np.testing.assert_allclose(result.eigenvalues, exact, rtol=1e-10, atol=1e-10)
    result = top_eigenvalues(DenseOperator(3 * torch.eye(20, dtype=torch.float64)), 3)
    assert result.converged and result.hvp_count == 3
    np.testing.assert_allclose(result.eigenvalues, [3.0, 3.0, 3.0], rtol=1e-12)


def test_power_refines_pairs_whose_full_residual_deflation_left_above_tol():
    # {5, 5, 3, ...}: each deflated run stops at tol, but the two copies of 5 stay coupled with
    # the 3 above tol until Rayleigh-Ritz on the residual directions refines them.
    spectrum = torch.cat([torch.tensor([5.0, 5.0, 3.0]), torch.linspace(-1.0, 1.0, 37)])
    op = DenseOperator(_matrix(spectrum, seed=3))
    result = top_eigenvalues(op, 2, method="power")
    assert result.converged, result.residuals
    assert max(result.residuals) <= 1e-4
    np.testing.assert_allclose(result.eigenvalues, [5.0, 5.0], rtol=1e-8)
    assert result.provenance["refinements"] >= 1


def test_lanczos_exhausts_a_small_space_exactly():
    spectrum = torch.tensor([5.0, 2.0, -1.0, 0.5])
    result = top_eigenvalues(DenseOperator(_matrix(spectrum)), 4, tol=1e-10)
    assert result.hvp_count == 4
    np.testing.assert_allclose(result.eigenvalues, [5.0, 2.0, 0.5, -1.0], rtol=1e-12)


def test_float32_operator():
    matrix = _hessian_like().float()
    result = top_eigenvalues(DenseOperator(matrix), 2, tol=1e-4, return_vectors=True)
    exact = torch.linalg.eigvalsh(matrix.double()).flip(0)[:2].numpy()
    assert result.converged and result.vectors.dtype == torch.float32
    np.testing.assert_allclose(result.eigenvalues, exact, rtol=1e-4)


def test_eigen_results_are_seeded():
    op = DenseOperator(_hessian_like())
    first, again = top_eigenvalues(op, 2, seed=7), top_eigenvalues(op, 2, seed=7)
    other = top_eigenvalues(op, 2, seed=8)
    assert first.history == again.history and first.history != other.history


def test_eigen_arguments_are_checked():
    op = DenseOperator(_matrix(torch.arange(1.0, 11.0)))
    with pytest.raises(ValueError, match="k = 11 eigenvalues asked of an operator of size 10"):
        top_eigenvalues(op, 11)
    for k in (0, -1, 1.5):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            top_eigenvalues(op, k)
    with pytest.raises(ValueError, match="tol"):
        top_eigenvalues(op, 1, tol=0)
    with pytest.raises(ValueError, match="method"):
        top_eigenvalues(op, 1, method="arnoldi")
    with pytest.raises(ValueError, match="cannot give k = 3"):
        top_eigenvalues(op, 3, max_iter=2)
    with pytest.raises(ValueError, match="max_iter"):
        smallest_eigenvalue(op, max_iter=0)


# --- traces ---------------------------------------------------------------------------------

ESTIMATORS = {"hutchinson": hutchinson, "hutch++": hutchpp, "xtrace": xtrace}


@pytest.mark.parametrize("method", list(ESTIMATORS))
def test_trace_estimators_converge_as_products_grow(method):
    matrix = _matrix(torch.linspace(-1.0, 3.0, 60) ** 2, seed=2)
    exact = float(matrix.trace())
    errors = []
    for products in (12, 48, 120):
        runs = [ESTIMATORS[method](DenseOperator(matrix), products, seed=s) for s in range(20)]
        assert all(r.hvp_count == products and r.method == method for r in runs)
        errors.append(np.mean([abs(r.trace - exact) for r in runs]))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.03 * exact
    if method == "xtrace":  # products / 2 = n test vectors: the sketch holds the whole space
        assert errors[2] < 1e-9 * exact


def test_variance_on_a_decaying_spectrum_and_stderr_coverage():
    matrix = _geometric()
    exact = float(matrix.trace())
    estimates, coverage, stderrs = {}, {}, {}
    for method, estimator in ESTIMATORS.items():
        runs = [estimator(DenseOperator(matrix), 30, seed=s) for s in range(200)]
        estimates[method] = np.array([r.trace for r in runs])
        stderrs[method] = np.array([r.stderr for r in runs])
        coverage[method] = np.mean([abs(r.trace - exact) <= 3 * r.stderr for r in runs])
    variance = {method: values.var() for method, values in estimates.items()}
    # measured: hutch++ / hutchinson = 0.16, xtrace / hutchinson = 0.03
    assert variance["hutch++"] < 0.5 * variance["hutchinson"]
    assert variance["xtrace"] < 0.5 * variance["hutch++"]
    for method, values in estimates.items():
        assert abs(values.mean() - exact) < 4 * values.std() / math.sqrt(200)  # unbiased
        assert coverage[method] >= 0.85  # measured 0.95 to 1.0
        # the mean standard error is the right size: within a factor 2 of the true spread
        assert 0.5 < stderrs[method].mean() / values.std() < 2


@pytest.mark.parametrize("name", ["geometric", "flat"])
def test_adaptive_hutchpp_is_unbiased_spends_its_budget_and_follows_the_spectrum(name):
    """A-Hutch++: unbiased within stderr over seeded trials, hvp_count == products, plain
    Hutchinson (no sketch) on a flat spectrum, a sketch and a smaller variance on a decaying one."""
    generator = torch.Generator().manual_seed(5)
    flat = 1 + 0.5 * torch.randn(150, generator=generator, dtype=torch.float64)
    matrix = _geometric() if name == "geometric" else _matrix(flat, seed=4)
    exact = float(matrix.trace())
    for products in (6, 13, 60):
        runs = [hutchpp(DenseOperator(matrix), products, seed=s, adaptive=True) for s in range(200)]
        assert all(r.hvp_count == products and r.method == "hutch++" for r in runs)
        assert all(r.provenance["adaptive"] for r in runs)
        values = np.array([r.trace for r in runs])
        assert abs(values.mean() - exact) < 4 * values.std() / math.sqrt(200)  # unbiased
        assert 0.5 < np.mean([r.stderr for r in runs]) / values.std() < 2
        plain = [hutchinson(DenseOperator(matrix), products, seed=s).trace for s in range(200)]
        sketches = [r.provenance["sketch"] for r in runs]
        if name == "flat":  # effective rank ~ 90 > budget: (almost) no sketch, Hutchinson's
            assert np.mean(sketches) < 0.5  # a noisy pilot statistic may try one direction
            assert values.var() < 1.2 * np.var(plain)
        elif products == 60:
            assert min(sketches) > 0 and values.var() < 0.5 * np.var(plain)
    with pytest.raises(ValueError, match="early stop"):
        hutchpp(DenseOperator(matrix), 20, adaptive=True, tol=0.1)


def test_trace_dispatcher_and_early_stop():
    matrix = _matrix(torch.linspace(1.0, 2.0, 80), seed=6)
    op = DenseOperator(matrix)
    exact = float(matrix.trace())
    result = trace(op, "hutchinson", products=1000, tol=0.01)
    assert result.hvp_count < 1000 and result.stderr <= 0.01 * abs(result.trace)
    assert result.trace == pytest.approx(exact, rel=0.05)
    assert len(result.history) == result.hvp_count
    assert result.history[-1] == pytest.approx(result.trace, rel=1e-12)
    result = trace(op, "hutch++", products=300, tol=0.01)
    assert result.hvp_count < 300 and result.stderr <= 0.01 * abs(result.trace)
    assert trace(op).method == "hutch++" and trace(op).hvp_count == 99
    assert trace(op, "xtrace", 20).provenance["distribution"] == "sphere"
    with pytest.raises(ValueError, match="no early stop"):
        trace(op, "xtrace", 20, tol=0.1)
    with pytest.raises(ValueError, match="method"):
        trace(op, "girard")


@pytest.mark.parametrize("distribution", ["sphere", "rademacher", "gaussian"])
def test_xtrace_is_the_exchangeable_leave_one_out_estimator(distribution):
    """XTrace (Epperly, Tropp & Webber 2024) written out: for each of the s = m/2 test vectors,
    an explicit basis of the sketch without its column, tr(Q^T A Q) plus the probe's deflated
    quadratic form (rescaled to the complement's expected length for the sphere: the improved
    estimator), then the mean and the standard error of the s estimates."""
    matrix, products = _hessian_like(40, seed=2), 12
    s, n = products // 2, 40
    result = xtrace(DenseOperator(matrix), products, seed=5, distribution=distribution)
    generator = torch.Generator().manual_seed(5)  # the estimator's test vectors, drawn in order
    columns = []
    for _ in range(s):
        if distribution == "rademacher":
            columns.append(torch.randint(0, 2, (n,), generator=generator).double() * 2 - 1)
        else:
            z = torch.randn(n, generator=generator, dtype=torch.float64)
            columns.append(z * (math.sqrt(n) / z.norm()) if distribution == "sphere" else z)
    omega = torch.stack(columns, dim=1)
    sketch = matrix @ omega
    estimates = []
    for i in range(s):
        basis = torch.linalg.qr(torch.cat([sketch[:, :i], sketch[:, i + 1 :]], dim=1)).Q
        probe = omega[:, i] - basis @ (basis.T @ omega[:, i])
        quadratic = float(probe @ matrix @ probe)
        if distribution == "sphere":
            quadratic *= (n - s + 1) / float(probe @ probe)
        estimates.append(float(torch.trace(basis.T @ matrix @ basis)) + quadratic)
    assert result.trace == pytest.approx(np.mean(estimates), rel=1e-10)
    assert result.stderr == pytest.approx(np.std(estimates, ddof=1) / math.sqrt(s), rel=1e-8)
    assert result.hvp_count == products


def test_trace_results_do_not_depend_on_block_size():
    op = DenseOperator(_geometric())
    for estimator in ESTIMATORS.values():
        one, many = estimator(op, 20, block_size=1), estimator(op, 20, block_size=32)
        assert one.trace == pytest.approx(many.trace, rel=1e-12)  # the same test vectors


def test_trace_arguments_are_checked():
    op = DenseOperator(_geometric(20))
    with pytest.raises(ValueError, match="products must be an integer >= 2"):
        hutchinson(op, 1)
    for products in (0, 1, 3):
        with pytest.raises(ValueError, match="products must be an integer >= 4"):
            hutchpp(op, products)
    with pytest.raises(ValueError, match=">= 4"):
        xtrace(op, 2)
    with pytest.raises(ValueError, match="even"):
        xtrace(op, 11)
    with pytest.raises(ValueError, match="size = 20"):
        xtrace(op, 42)
    with pytest.raises(ValueError, match="rank deficient"):
        xtrace(DenseOperator(torch.ones(20, 20, dtype=torch.float64)), 8)
    with pytest.raises(ValueError, match="distribution"):
        hutchinson(op, 10, distribution="uniform")
    with pytest.raises(ValueError, match="block_size"):
        hutchpp(op, 10, block_size=0)


# --- spectral density -----------------------------------------------------------------------


def test_spectral_density_integrates_to_one_and_matches_moments():
    spectrum = 2.0 + torch.linspace(-1.0, 1.5, 200) ** 3
    matrix, probes, steps = _matrix(spectrum, seed=8), 8, 40
    result = spectral_density(DenseOperator(matrix), probes=probes, steps=steps)
    assert result.hvp_count == probes * steps
    assert result.nodes.shape == result.weights.shape == (probes, steps)
    np.testing.assert_allclose(result.weights.sum(axis=1), 1.0, rtol=1e-12)
    grid_integral = np.sum((result.density[1:] + result.density[:-1]) * np.diff(result.grid)) / 2
    assert grid_integral == pytest.approx(1.0, abs=1e-12)
    assert result.sigma == pytest.approx(0.005 * (result.nodes.max() - result.nodes.min()))
    # Gauss quadrature is exact for degree <= 2 * steps - 1, so the moments are Hutchinson
    # estimates of tr(A^p) / n from unit Rademacher probes: tolerance 4 of their standard errors
    # sqrt(2 (||M||_F^2 - sum diag(M)^2) / (probes n^2)), M = A^p. Smoothing adds sigma^2 to p = 2.
    n = len(spectrum)
    for p, extra in ((1, 0.0), (2, result.sigma**2)):
        power = torch.linalg.matrix_power(matrix, p)
        exact = float((spectrum**p).mean()) + extra
        stderr = math.sqrt(2 * (power.square().sum() - power.diag().square().sum()) / probes) / n
        assert result.moments(2)[p] == pytest.approx(exact, abs=4 * stderr)
        assert result.moments(2, smoothed=False)[p] == pytest.approx(exact - extra, abs=4 * stderr)
        assert 4 * stderr < 0.15 * exact  # the check has teeth (measured errors: 0.1-0.2 stderr)
    assert result.moments(2)[0] == pytest.approx(1.0, abs=1e-12)


def test_spectral_density_of_a_multiple_of_the_identity_and_a_given_grid():
    op = DenseOperator(3 * torch.eye(30, dtype=torch.float64))
    result = spectral_density(op, probes=2, steps=10)
    assert result.hvp_count == 20  # each step breaks down and restarts: nodes 3, weight on one
    np.testing.assert_allclose(result.nodes, 3.0, rtol=1e-12)
    moments = result.moments(2)
    assert moments[1] == pytest.approx(3.0) and moments[2] == pytest.approx(9.0 + result.sigma**2)
    grid = np.linspace(0.0, 6.0, 601)
    result = spectral_density(op, probes=1, steps=5, sigma=0.1, grid=grid)
    np.testing.assert_array_equal(result.grid, grid)
    assert result.grid[np.argmax(result.density)] == pytest.approx(3.0)
    assert result.density.max() == pytest.approx(1 / (0.1 * math.sqrt(2 * math.pi)), rel=1e-6)


def test_spectral_density_arguments_are_checked():
    op = DenseOperator(_geometric(10))
    for kwargs in (
        {"probes": 0},
        {"steps": 0},
        {"sigma": -1.0},
        {"grid_points": 1},
        {"grid": [1.0, 0.0]},
    ):
        with pytest.raises(ValueError):
            spectral_density(op, **kwargs)
    assert spectral_density(op, steps=50).nodes.shape == (4, 10)  # steps capped at n


# --- results --------------------------------------------------------------------------------


def test_results_are_frozen_and_json_able():
    op = DenseOperator(_geometric(30))
    eigen = top_eigenvalues(op, 2, return_vectors=True, seed=3)
    traced = hutchpp(op, 12, seed=4)
    density = spectral_density(op, probes=2, steps=8, seed=5)
    for result, cls in ((eigen, EigenResult), (traced, TraceResult), (density, DensityResult)):
        assert isinstance(result, cls)
        with pytest.raises(dataclasses.FrozenInstanceError):
            result.hvp_count = 0
        as_dict = json.loads(json.dumps(result.to_dict()))
        assert as_dict["provenance"]["operator"] == "dense"
        assert {"algorithm", "tol", "seed"} <= set(result.provenance)
        assert as_dict["hvp_count"] == result.hvp_count > 0
    assert "vectors" not in eigen.to_dict() and eigen.vectors.shape == (30, 2)
    assert eigen.provenance["seed"] == 3 and eigen.provenance["algorithm"] == "lanczos"
    assert traced.provenance["sketch"] == 4 and traced.to_dict()["trace"] == traced.trace
    with pytest.raises(ValueError):
        density.density[0] = 1.0  # arrays are read-only
    assert len(density.to_dict()["nodes"]) == 2 and density.provenance["algorithm"] == "slq"
    for change in (
        lambda p: p.__setitem__("seed", 0),
        lambda p: p.update(seed=0),
        lambda p: p.pop("seed"),
        lambda p: p.setdefault("new", 1),
        lambda p: p.clear(),
    ):
        with pytest.raises(TypeError, match="cannot be changed"):
            change(eigen.provenance)  # provenance is read-only too
    assert eigen.provenance["seed"] == 3
    copied = dict(eigen.provenance)
    copied["seed"] = 0  # a copy is the caller's
    revived = pickle.loads(pickle.dumps(traced))  # results cross MPI ranks by pickle
    assert revived == traced and type(revived.provenance) is type(traced.provenance)
    assert copy.deepcopy(eigen.provenance) == eigen.provenance
    assert type(eigen.to_dict()["provenance"]) is dict  # to_dict's copy can be edited


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_algorithms_work_on_the_operator_device():
    # the random vectors come from CPU generators: the same seed gives the same numbers
    matrix = _hessian_like()
    cpu, gpu = DenseOperator(matrix), DenseOperator(matrix.cuda())
    for method in ("lanczos", "power"):
        on_cpu = top_eigenvalues(cpu, 3, method=method, return_vectors=True)
        on_gpu = top_eigenvalues(gpu, 3, method=method, return_vectors=True)
        assert on_gpu.vectors.device.type == "cuda"
        np.testing.assert_allclose(on_gpu.eigenvalues, on_cpu.eigenvalues, rtol=1e-10)
    for estimator in ESTIMATORS.values():
        assert estimator(gpu, 30).trace == pytest.approx(estimator(cpu, 30).trace, rel=1e-10)
    np.testing.assert_allclose(
        spectral_density(gpu, steps=20).density, spectral_density(cpu, steps=20).density, rtol=1e-6
    )
