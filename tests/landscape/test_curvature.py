"""landscape.curvature: the Hessian's top eigenvalue and sharpness read off surfaces, against
closed forms (quadratics whose Hessians and rises are known)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from landscape.curvature import (
    hessian_smallest_eigenvalue,
    hessian_top_eigenvalue,
    hessian_vector_product,
    sharpness_1d,
    sharpness_2d,
)


def test_hessian_top_eigenvalue_matches_a_quadratic():
    torch.manual_seed(0)
    x = torch.randn(64, 5, dtype=torch.float64) * torch.tensor([3.0, 1, 1, 0.5, 0.2]).double()
    y = torch.randn(64, 1, dtype=torch.float64)
    model = nn.Linear(5, 1, bias=False).double()
    eig = hessian_top_eigenvalue(model, [(x[:40], y[:40]), (x[40:], y[40:])], iters=200, tol=1e-12)
    exact = np.linalg.eigvalsh((2 / 64 * x.T @ x).numpy()).max()
    assert eig.converged
    assert eig.eigenvalue == pytest.approx(exact, rel=1e-8)


def test_hessian_top_eigenvalue_is_the_largest_not_the_largest_in_magnitude():
    # loss = mean_i c_i (x_i . w)^2 with x = e1 (c = 1), e2 (c = -3): H = diag(1, -3)
    model = nn.Linear(2, 1, bias=False).double()
    x = torch.eye(2, dtype=torch.float64)
    c = torch.tensor([[1.0], [-3.0]], dtype=torch.float64)

    def loss_fn(out, coef):
        return (coef * out.square()).mean()

    eig = hessian_top_eigenvalue(model, [(x, c)], loss_fn, iters=200, tol=1e-12)
    assert eig.converged and eig.eigenvalue == pytest.approx(1.0, rel=1e-8)
    # the dominant eigenvalue (what unshifted power iteration finds) is the other one
    bottom = hessian_smallest_eigenvalue(model, (x, c), loss=loss_fn, tol=1e-12)
    assert bottom.eigenvalues[0] == pytest.approx(-3.0, rel=1e-8)


def test_sharpness_of_quadratic_bowls() -> None:
    k, rho, base = 3.0, 0.05, 0.2
    x = np.linspace(-1, 1, 41)
    row = sharpness_1d(x, base + 0.5 * k * x**2 + 0.3 * x, rho)
    assert row["loss_center"] == pytest.approx(base)
    assert row["fd_step"] == pytest.approx(0.05)
    assert row["curv_fd"] == pytest.approx(k) and row["curv_fit"] == pytest.approx(k)
    assert row["rise1d"] == pytest.approx(0.5 * k * rho**2)  # the slope cancels in the mean
    assert row["rise1d_max"] == pytest.approx(0.5 * k * rho**2 + 0.3 * rho)
    x, y = np.linspace(-1, 1, 21), np.linspace(-1, 1, 11)  # grid steps 0.1 and 0.2 > rho
    kx, ky = 2.0, 6.0
    grid_x, grid_y = np.meshgrid(x, y)
    surface = base + 0.5 * (kx * grid_x**2 + ky * grid_y**2)
    row = sharpness_2d(x, y, surface, rho)
    assert row["rise2d"] == pytest.approx(0.25 * (kx + ky) * rho**2)  # mean of cos^2 = 1/2
    assert row["rise2d_max"] == pytest.approx(0.5 * ky * rho**2)
    assert row["loss_2d_max"] == pytest.approx(surface.max())
    with pytest.raises(ValueError, match="x = 0"):
        sharpness_1d(np.linspace(0.1, 1, 5), np.ones(5), rho)
    with pytest.raises(ValueError, match="not computed"):
        sharpness_2d(x, y, np.where(grid_x > 0.5, np.nan, surface), rho)


def test_hessian_vector_product_matches_autograd_hessian():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    x, y = torch.randn(10, 3, dtype=torch.float64), torch.randn(10, 1, dtype=torch.float64)
    params = list(model.parameters())
    shapes = [p.shape for p in params]
    sizes = [p.numel() for p in params]
    flat = torch.cat([p.detach().reshape(-1) for p in params])

    def loss_of(flat_params):
        chunks = torch.split(flat_params, sizes)
        named = {
            name: c.view(s)
            for (name, _), c, s in zip(model.named_parameters(), chunks, shapes, strict=True)
        }
        out = torch.func.functional_call(model, named, (x,))
        return nn.functional.mse_loss(out, y)

    hessian = torch.autograd.functional.hessian(loss_of, flat)
    vector = torch.randn(flat.numel(), dtype=torch.float64)
    pieces = [v.view(s) for v, s in zip(torch.split(vector, sizes), shapes, strict=True)]
    batches = [(x[:6], y[:6]), (x[6:], y[6:])]
    hv = hessian_vector_product(model, params, batches, nn.functional.mse_loss, pieces)
    got = torch.cat([h.reshape(-1) for h in hv])
    torch.testing.assert_close(got, hessian @ vector, rtol=1e-10, atol=1e-12)
