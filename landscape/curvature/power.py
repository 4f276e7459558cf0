"""Top eigenvalues by power iteration with deflation.

**Power iteration with deflation** (as PyHessian, Yao et al. 2020, and
:mod:`landscape.curvature.hessian`): one eigenvalue at a time, the iterate is kept orthogonal to
the eigenvectors already found, the estimate is the Rayleigh quotient, and a run stops when the
relative residual of the deflated operator reaches ``tol``. Power iteration finds the eigenvalue
of largest *magnitude*; where that is negative, the run is repeated on ``H - mu I`` with ``mu``
that eigenvalue (all remaining eigenvalues are then ``>= mu``), so the result is the top of the
spectrum in algebraic order. A final Rayleigh-Ritz step on the vectors found (free: their
products are known) removes the coupling that inexact deflation leaves between them; where a
pair's full residual is still above ``tol`` (close or repeated eigenvalues), the residual
directions join the basis and Rayleigh-Ritz is redone (a block Davidson step: one product per
direction, at most :data:`POWER_REFINEMENTS` rounds; ``provenance["refinements"]``).

:func:`deflated_power` is ``top_eigenvalues(..., method="power")``
(:func:`landscape.curvature.eigen.top_eigenvalues`).
"""

from __future__ import annotations

import time

import torch
from torch import Tensor

from landscape.curvature.ritz import dot64, eigen_result, rayleigh_ritz, relative_residual
from landscape.curvature.start import gaussian_start, start_vector

__all__ = ["POWER_MAX_ITER", "POWER_REFINEMENTS", "deflated_power", "project_out"]

#: products per eigenvalue at most (``max_iter`` overrides)
POWER_MAX_ITER = 200
#: power iteration: at most this many Rayleigh-Ritz refinements of the pairs found (each one
#: product per pair whose full residual is above tol)
POWER_REFINEMENTS = 10


def project_out(w: Tensor, found: list[Tensor]) -> Tensor:
    """``w`` with its components along the (orthonormal) ``found`` removed, twice."""
    if not found:
        return w
    basis = torch.stack(found)
    for _ in range(2):
        w = w - basis.T @ (basis @ w)
    return w


def _power_run(op, found, values, shift, tol, max_iter, generator, history, first=None):
    """Power iteration on the deflated ``H - shift I`` from ``first`` (default: a random
    vector); returns ``(theta, v, Hv, converged)``."""
    v = project_out(gaussian_start(op, generator) if first is None else first, found)
    v = v / v.norm()
    theta, hv = 0.0, None
    for _ in range(max_iter):
        hv = op.matvec(v)
        theta = dot64(v, hv)
        residual = float(project_out(hv - theta * v, found).double().norm())
        history.append((*values, theta))
        if relative_residual(residual, theta) <= tol:
            return theta, v, hv, True
        following = project_out(hv - shift * v, found)
        norm = float(following.double().norm())
        if not norm > 0.0:  # v lies in the null space of the shifted, deflated operator
            return theta, v, hv, False
        v = following / norm
    return theta, v, hv, False


def deflated_power(op, k, tol, max_iter, seed, return_vectors, start_with):
    """The ``k`` algebraically largest eigenpairs by deflated power iteration (the module
    docstring); the arguments as :func:`~landscape.curvature.eigen.top_eigenvalues`'."""
    start, count0 = time.perf_counter(), op.hvp_count
    per_eigenvalue = max_iter if max_iter is not None else POWER_MAX_ITER
    generator = torch.Generator().manual_seed(seed)
    first, start_facts = start_vector(op, start_with, generator)
    found: list[Tensor] = []
    products: list[Tensor] = []
    values: list[float] = []
    history: list[tuple[float, ...]] = []
    shift, shifted_at = 0.0, -1
    while len(found) < k:
        theta, v, hv, _ = _power_run(
            op, found, values, shift, tol, per_eigenvalue, generator, history, first
        )
        first = None  # the runs after the first (later eigenvalues, a shift) start at random
        if theta - shift < 0 and shifted_at != len(found):
            # The dominant remaining eigenvalue is negative: every remaining one is >= theta,
            # so on H - theta I the dominant one is the largest. Redo this eigenvalue there.
            shift, shifted_at = theta, len(found)
            continue
        found.append(v)
        products.append(hv)
        values.append(theta)
    # Rayleigh-Ritz on the vectors found (their products are known: no extra products).
    basis, images = torch.stack(found, dim=1), torch.stack(products, dim=1)
    theta, vectors, images, residual_vectors, residuals = rayleigh_ritz(op, basis, images, k)
    history.append(tuple(float(t) for t in theta))
    # Each run stopped on its residual after deflation; the full residual of a pair can be
    # above tol where eigenvalues are close or repeated (inexact deflation couples them).
    # Refine: add the residual directions to the basis and redo Rayleigh-Ritz (a block
    # Davidson step: one product per direction added).
    refinements = 0
    while max(residuals) > tol and refinements < POWER_REFINEMENTS:
        chosen = [i for i, r in enumerate(residuals) if r > tol]
        extra_dirs = residual_vectors[:, chosen]
        extra_dirs = extra_dirs / extra_dirs.norm(dim=0, keepdim=True)
        grown = torch.cat([vectors / vectors.norm(dim=0, keepdim=True), extra_dirs], dim=1)
        q, upper = torch.linalg.qr(grown)
        if torch.diagonal(upper).abs().min() <= torch.finfo(upper.dtype).eps ** 0.5:
            break  # a residual lies in the span already (to rounding): nothing to add
        fresh = torch.stack([op.matvec(extra_dirs[:, j]) for j in range(len(chosen))], dim=1)
        grown_images = torch.cat([images, fresh], dim=1)
        # q = grown @ inv(upper), so H q = (H grown) @ inv(upper)
        q_images = torch.linalg.solve_triangular(upper.T, grown_images.T, upper=False).T
        theta, vectors, images, residual_vectors, residuals = rayleigh_ritz(op, q, q_images, k)
        history.append(tuple(float(t) for t in theta))
        refinements += 1
    vectors = vectors / vectors.norm(dim=0, keepdim=True) if return_vectors else None
    extra = {
        "algorithm": "power",
        "k": k,
        "max_iter": per_eigenvalue,
        "shift": shift,
        "refinements": refinements,
        **start_facts,
    }
    return eigen_result(
        op, theta, vectors, residuals, history, "power", tol, seed, count0, start, extra
    )
