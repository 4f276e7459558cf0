"""What the eigensolvers of :mod:`landscape.curvature.eigen` (Lanczos) and
:mod:`landscape.curvature.power` (deflated power iteration) share: float64 dot products,
relative residuals, Rayleigh-Ritz on a basis whose products are known, the checks of a request
and the frozen result."""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import Tensor

from landscape.curvature.results import EigenResult

__all__ = ["check_request", "dot64", "eigen_result", "rayleigh_ritz", "relative_residual"]


def dot64(a: Tensor, b: Tensor) -> float:
    """``a . b`` accumulated in float64."""
    return float(torch.dot(a.double(), b.double()))


def relative_residual(residual: float, theta: float) -> float:
    """``residual / |theta|``; 0 for a zero residual, infinite for ``theta = 0``."""
    if residual == 0.0:
        return 0.0
    return residual / abs(theta) if theta != 0.0 else math.inf


def check_request(op, k: int, tol: float, max_iter: int | None) -> None:
    """Refuse a ``k``, ``tol`` or ``max_iter`` the eigensolvers cannot serve."""
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k > op.size:
        raise ValueError(f"k = {k} eigenvalues asked of an operator of size {op.size}")
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol}")
    if max_iter is not None and max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")


def eigen_result(op, values, vectors, residuals, history, method, tol, seed, count0, start, extra):
    """The frozen :class:`EigenResult` of a run that started at ``start`` (perf_counter) with
    ``count0`` products made; ``extra`` joins the operator's provenance."""
    residuals = tuple(float(r) for r in residuals)
    return EigenResult(
        eigenvalues=tuple(float(v) for v in values),
        vectors=vectors,
        residuals=residuals,
        converged=len(residuals) > 0 and all(r <= tol for r in residuals),
        hvp_count=op.hvp_count - count0,
        history=tuple(history),
        method=method,
        tol=float(tol),
        seed=int(seed),
        seconds=time.perf_counter() - start,
        provenance={**op.provenance(), **extra, "tol": float(tol), "seed": int(seed)},
    )


def rayleigh_ritz(op, basis: Tensor, images: Tensor, k: int):
    """The top ``k`` Ritz pairs of ``op`` on the orthonormal columns of ``basis`` (``images``
    = ``op`` times them): ``(theta, vectors, their images, residual vectors, relative
    residuals)``, largest first."""
    gram = (basis.double().T @ images.double()).cpu().numpy()
    theta, rotation = np.linalg.eigh((gram + gram.T) / 2)
    order = np.argsort(theta)[::-1][:k]
    theta, rotation = theta[order], rotation[:, order]
    rotation_t = torch.as_tensor(rotation, dtype=op.dtype, device=op.device)
    vectors, images = basis @ rotation_t, images @ rotation_t
    residual_vectors = images - vectors * torch.as_tensor(theta, dtype=op.dtype, device=op.device)
    residual_norms = residual_vectors.double().norm(dim=0).cpu().numpy()
    residuals = [relative_residual(float(r), float(t)) for r, t in zip(residual_norms, theta)]
    return theta, vectors, images, residual_vectors, residuals
