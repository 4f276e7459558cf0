"""Start vectors of landscape.curvature's eigensolvers: the default gradient start (the loss
gradient plus a seeded random component) against the random one on a tiny float64 classifier
whose exact spectrum is known, warm starts, and the fall-back for operators without a gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from landscape.curvature import DenseOperator, HessianOperator, smallest_eigenvalue, top_eigenvalues

SEEDS = range(10)


@pytest.fixture(scope="module")
def classifier():
    """A 212-parameter tanh MLP on 64 random 4-class samples (seeded; its gradient start is
    measured to save about two products over ten seeds at tol 1e-6) and its exact spectrum."""
    torch.manual_seed(1)
    inputs = torch.randn(64, 8, dtype=torch.float64)
    targets = torch.randint(0, 4, (64,))
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4)).double()
    op = HessianOperator(model, (inputs, targets), mode="reverse")
    hessian = op.matmat(torch.eye(op.size, dtype=torch.float64))
    eigenvalues, vectors = torch.linalg.eigh((hessian + hessian.T) / 2)
    return op, eigenvalues.flip(0).numpy(), vectors.flip(1)


def test_the_gradient_start_converges_at_least_as_fast_to_the_same_eigenvalue(classifier):
    op, exact, _ = classifier
    runs = {
        start: [top_eigenvalues(op, 1, tol=1e-6, seed=s, start=start) for s in SEEDS]
        for start in ("gradient", "random")
    }
    for start, results in runs.items():
        for result in results:
            assert result.converged and result.provenance["start"] == start
            assert result.eigenvalues[0] == pytest.approx(exact[0], rel=1e-9)
    gradient, random = ([r.hvp_count for r in runs[s]] for s in ("gradient", "random"))
    assert np.mean(gradient) < np.mean(random)
    assert max(gradient) <= max(random)
    # the first Rayleigh quotient shows the start: the gradient weighs the top eigenvectors
    first = {s: np.mean([r.history[0][0] for r in runs[s]]) for s in runs}
    assert first["gradient"] > 5 * first["random"]
    # the random component makes the seed matter, and the default is the gradient start
    assert runs["gradient"][0].history != runs["gradient"][1].history
    default = top_eigenvalues(op, 1, tol=1e-6, seed=0)
    assert default.history == runs["gradient"][0].history
    assert default.provenance["start_mix"] == pytest.approx(0.1)


def test_power_iteration_and_top_k_take_the_start_too(classifier):
    op, exact, _ = classifier
    for method in ("power", "lanczos"):
        result = top_eigenvalues(op, 3, method=method, tol=1e-8, seed=0, max_iter=400)
        assert result.provenance["start"] == "gradient"
        np.testing.assert_allclose(result.eigenvalues, exact[:3], rtol=1e-7)


def test_a_warm_start_from_the_eigenvector_needs_one_product(classifier):
    op, exact, vectors = classifier
    result = top_eigenvalues(op, 1, tol=1e-6, start=3.0 * vectors[:, 0])
    assert result.hvp_count == 1 and result.provenance["start"] == "given"
    assert result.eigenvalues[0] == pytest.approx(exact[0], rel=1e-12)


def test_the_smallest_eigenvalue_starts_at_random_unless_asked(classifier):
    op, exact, _ = classifier
    result = smallest_eigenvalue(op, tol=1e-6)
    assert result.provenance["start"] == "random"
    assert result.eigenvalues[0] == pytest.approx(exact[-1], rel=1e-6)
    assert smallest_eigenvalue(op, tol=1e-6, start="gradient").provenance["start"] == "gradient"


def test_operators_without_a_gradient_or_with_a_zero_one_start_at_random():
    generator = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(20, 20, generator=generator, dtype=torch.float64)).Q
    matrix = (basis * torch.arange(1.0, 21.0, dtype=torch.float64)) @ basis.T
    op = DenseOperator((matrix + matrix.T) / 2)
    default = top_eigenvalues(op, 1, tol=1e-8, seed=3)
    random = top_eigenvalues(op, 1, tol=1e-8, seed=3, start="random")
    assert default.provenance["start"] == "random"
    assert "no gradient()" in default.provenance["start_note"]
    assert default.history == random.history

    class ZeroGradient(DenseOperator):
        def gradient(self) -> torch.Tensor:
            return torch.zeros(self.size, dtype=self.dtype)

    zero = top_eigenvalues(ZeroGradient((matrix + matrix.T) / 2), 1, tol=1e-8, seed=3)
    assert zero.provenance["start"] == "random" and zero.history == random.history
    assert "norm is 0.0" in zero.provenance["start_note"]


@pytest.mark.parametrize(
    ("start", "match"),
    [
        ("gradiant", "start must be one of"),
        (torch.ones(3, dtype=torch.float64), r"shape \(20,\)"),
        (torch.zeros(20, dtype=torch.float64), "non-zero and finite"),
        (torch.full((20,), float("nan"), dtype=torch.float64), "non-zero and finite"),
    ],
)
def test_bad_starts_are_value_errors(start, match):
    op = DenseOperator(torch.eye(20, dtype=torch.float64))
    with pytest.raises(ValueError, match=match):
        top_eigenvalues(op, 1, start=start)
