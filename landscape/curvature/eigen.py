"""Extreme eigenvalues of a symmetric operator: Lanczos and deflated power iteration.

**Lanczos** (Lanczos 1950; Golub & Van Loan, *Matrix Computations*, §10.1) builds an
orthonormal basis ``Q_m`` of the Krylov space ``span{q, Hq, ..., H^(m-1) q}`` one product at a
time, with ``H Q_m = Q_m T_m + beta_m q_(m+1) e_m^T`` and ``T_m`` tridiagonal (``alpha`` on the
diagonal, ``beta`` beside it). Every new vector is re-orthogonalised against the whole basis,
twice ("twice is enough", Parlett), so no ghost copies of converged eigenvalues appear; the
``alpha`` / ``beta`` are accumulated in float64 whatever the operator's dtype. The Ritz pairs
``(theta_i, Q_m s_i)`` of ``T_m`` have residual ``||H Q_m s_i - theta_i Q_m s_i|| =
|beta_m| * |s_i[m]|`` (Paige), which costs no extra product: :func:`top_eigenvalues` stops as
soon as the ``k`` largest Ritz values all have relative residual ``<= tol``, and the error of a
Ritz value is at most its residual (and of order residual^2 / gap once it is separated).
Lanczos converges with the square root of the relative gap, power iteration with the gap
itself (Kuczynski & Wozniakowski 1992), so it needs far fewer products, above all for top-k.
A breakdown (``beta ~ 0``: the Krylov space is invariant) restarts from a random vector
orthogonal to the basis, so eigenvalues the start vector missed are still found.

**Power iteration with deflation** (as PyHessian): :mod:`landscape.curvature.power`.

Start vectors (:mod:`landscape.curvature.start`): :func:`top_eigenvalues` starts by default
from the loss gradient plus a seeded random component, :func:`smallest_eigenvalue` from the
seeded random vector alone.

.. note:: A single-vector Krylov method sees one copy of a repeated eigenvalue (the start
   vector has one component in its eigenspace); rounding or a breakdown restart may reveal the
   others later. Deflated power iteration finds each copy. A relative residual is undefined
   for an eigenvalue at zero: such an estimate reads ``converged=False`` unless its residual
   is exactly zero.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import Tensor

from landscape.curvature.power import deflated_power
from landscape.curvature.results import EigenResult
from landscape.curvature.ritz import check_request, dot64, eigen_result, relative_residual
from landscape.curvature.start import gaussian_start, start_vector

__all__ = ["Lanczos", "smallest_eigenvalue", "top_eigenvalues"]

#: Lanczos steps in all at most (``max_iter`` overrides)
LANCZOS_MAX_ITER = 100


class Lanczos:
    """One Lanczos process on ``op`` with full reorthogonalisation (twice).

    Args:
        op: an operator following the protocol of :mod:`landscape.curvature` (size, dtype,
            device, matvec).
        start: the start vector (normalised here; not modified).
        generator: CPU generator for the random restart after a breakdown.
        capacity: the most steps that will be taken (the basis grows up to it, and never
            beyond ``op.size``).

    Each :meth:`step` costs one product. After ``m`` steps, :meth:`ritz` gives the eigenpairs
    of ``T_m`` (float64), :meth:`residuals` the Ritz residual norms ``|beta_m s[m]|`` and
    :meth:`ritz_vectors` the vectors ``Q_m s`` on the operator's device.
    """

    def __init__(self, op, start: Tensor, generator: torch.Generator, capacity: int) -> None:
        self.op = op
        self._generator = generator
        self._capacity = max(1, min(int(capacity), op.size))
        self._basis = torch.empty(
            (min(self._capacity, 32), op.size), dtype=op.dtype, device=op.device
        )
        norm = float(start.double().norm())
        if not norm > 0.0:
            raise ValueError("the Lanczos start vector must be non-zero and finite")
        self._basis[0] = start / norm
        self.alpha: list[float] = []
        self.offdiag: list[float] = []  # couplings in T (0 after a breakdown restart)
        self.last_beta = 0.0  # ||w|| after the latest step: the residual factor
        self.restarts = 0
        self.exhausted = False  # the basis spans the whole space
        self._norm_estimate = 0.0

    @property
    def steps(self) -> int:
        return len(self.alpha)

    def _orthogonalise(self, w: Tensor, count: int) -> Tensor:
        basis = self._basis[:count]
        for _ in range(2):
            w = w - basis.T @ (basis @ w)
        return w

    def step(self) -> None:
        """One Lanczos step: a product, the new ``alpha``/``beta``, the next basis vector."""
        if self.exhausted or self.steps >= self._capacity:
            raise RuntimeError("the Lanczos process is at its capacity")
        j = self.steps
        q = self._basis[j]
        w = self.op.matvec(q)
        alpha = dot64(q, w)
        w = w - alpha * q
        if j > 0:
            w = w - self.offdiag[-1] * self._basis[j - 1]
        w = self._orthogonalise(w, j + 1)
        beta = float(w.double().norm())
        self.alpha.append(alpha)
        self.last_beta = beta
        previous = self.offdiag[-1] if self.offdiag else 0.0
        self._norm_estimate = max(self._norm_estimate, abs(alpha) + beta + previous)
        if self.steps == self.op.size:
            self.exhausted = True
            return
        if self.steps == self._capacity:
            return
        if self.steps == self._basis.shape[0]:  # grow the basis buffer
            grown = torch.empty(
                (min(2 * self.steps, self._capacity), self.op.size),
                dtype=self.op.dtype,
                device=self.op.device,
            )
            grown[: self.steps] = self._basis
            self._basis = grown
        breakdown = 100 * torch.finfo(self.op.dtype).eps * self._norm_estimate
        if beta > breakdown:
            self.offdiag.append(beta)
            self._basis[self.steps] = w / beta
            return
        # Invariant subspace: continue from a random vector orthogonal to the basis.
        self.restarts += 1
        self.offdiag.append(0.0)
        fresh = self._orthogonalise(gaussian_start(self.op, self._generator), self.steps)
        self._basis[self.steps] = fresh / fresh.norm()

    def tridiagonal(self) -> np.ndarray:
        """``T_m`` as a dense float64 ``(m, m)`` array."""
        m = self.steps
        t = np.diag(np.asarray(self.alpha, dtype=np.float64))
        if m > 1:
            off = np.asarray(self.offdiag[: m - 1], dtype=np.float64)
            t += np.diag(off, 1) + np.diag(off, -1)
        return t

    def ritz(self) -> tuple[np.ndarray, np.ndarray]:
        """Ritz values (ascending) and the eigenvectors of ``T_m`` (columns), float64."""
        return np.linalg.eigh(self.tridiagonal())

    def residuals(self, eigvecs: np.ndarray) -> np.ndarray:
        """Residual norms ``|beta_m * s[m]|`` of the Ritz pairs whose ``T_m``-eigenvectors are
        the columns of ``eigvecs``."""
        return np.abs(self.last_beta * eigvecs[-1])

    def ritz_vectors(self, eigvecs: np.ndarray) -> Tensor:
        """The unit Ritz vectors ``Q_m s`` as an ``(n, k)`` tensor."""
        coefficients = torch.as_tensor(eigvecs, dtype=self.op.dtype, device=self.op.device)
        vectors = self._basis[: self.steps].T @ coefficients
        return vectors / vectors.norm(dim=0, keepdim=True)


def _lanczos_extreme(op, k, largest, tol, max_iter, seed, return_vectors, start_with):
    start, count0 = time.perf_counter(), op.hvp_count
    cap = min(op.size, max_iter if max_iter is not None else max(LANCZOS_MAX_ITER, 10 * k))
    if cap < k:
        raise ValueError(f"max_iter = {max_iter} Lanczos steps cannot give k = {k} eigenvalues")
    generator = torch.Generator().manual_seed(seed)
    first, start_facts = start_vector(op, start_with, generator)
    lanczos = Lanczos(op, first, generator, capacity=cap)
    history = []
    while True:
        lanczos.step()
        theta, eigvecs = lanczos.ritz()
        chosen = (np.arange(len(theta))[::-1] if largest else np.arange(len(theta)))[:k]
        found = zip(lanczos.residuals(eigvecs[:, chosen]), theta[chosen])
        residuals = [relative_residual(r, t) for r, t in found]
        history.append(tuple(float(t) for t in theta[chosen]))
        done = len(chosen) == k and all(r <= tol for r in residuals)
        if done or lanczos.exhausted or lanczos.steps >= cap:
            break
    vectors = lanczos.ritz_vectors(eigvecs[:, chosen]) if return_vectors else None
    extra = {
        "algorithm": "lanczos",
        "which": "largest" if largest else "smallest",
        "k": k,
        "max_iter": cap,
        "restarts": lanczos.restarts,
        **start_facts,
    }
    values = theta[chosen]
    return eigen_result(
        op, values, vectors, residuals, history, "lanczos", tol, seed, count0, start, extra
    )


def top_eigenvalues(
    op,
    k: int = 1,
    *,
    method: str = "lanczos",
    tol: float = 1e-4,
    max_iter: int | None = None,
    seed: int = 0,
    return_vectors: bool = False,
    start: str | Tensor = "gradient",
) -> EigenResult:
    """The ``k`` algebraically largest eigenvalues of a symmetric operator, largest first.

    Args:
        op: an operator following the protocol (see :mod:`landscape.curvature`).
        k: how many eigenvalues (``1 <= k <= op.size``).
        method: ``"lanczos"`` (full reorthogonalisation; stops as soon as the ``k`` largest
            Ritz values have relative residual ``<= tol``) or ``"power"`` (one eigenvalue at a
            time with deflation, a shift where the dominant eigenvalue is negative).
        tol: the relative residual ``||H v - theta v|| / |theta|`` to reach. The eigenvalue
            error is at most ``tol * |theta|`` and, once the eigengap is resolved, of order
            ``tol^2 * |theta|^2 / gap``: on a spectrum with ``lambda_2 = 0.7 lambda_1``, Lanczos
            at ``tol=1e-2`` stopped after 5-7 products with ``lambda_1`` within 1.4e-4, at
            ``tol=1e-3`` after 7-8 products within 1.2e-6.
        max_iter: Lanczos: the most steps (products) in all, default
            ``min(n, max(100, 10 k))``; power: the most products per eigenvalue, default 200.
        seed: seeds the CPU generator of the Gaussian start vectors.
        return_vectors: also return the unit eigenvectors as an ``(n, k)`` tensor.
        start: ``"gradient"`` (the default: the operator's loss gradient plus a seeded random
            component, see the module docstring; the random vector where the operator has no
            ``gradient()``), ``"random"`` (the seeded unit Gaussian vector), or a tensor of
            length ``op.size`` (a warm start, e.g. the previous eigenvector). Power iteration
            uses it for the first eigenvalue. ``provenance["start"]``: the start used.

    Returns:
        :class:`~landscape.curvature.results.EigenResult`; ``converged`` is ``False`` when the
        iteration cap came first (the estimates are then the best so far). ``converged`` says
        that every returned pair has relative residual ``<= tol`` (each value is an eigenvalue
        to that accuracy); with Lanczos a repeated eigenvalue may be returned once and the
        next distinct one in the place of its copies (see the module note): where eigenvalues
        may repeat exactly (symmetric models at initialisation), use ``method="power"``.
    """
    check_request(op, k, tol, max_iter)
    if method == "lanczos":
        return _lanczos_extreme(op, k, True, tol, max_iter, seed, return_vectors, start)
    if method == "power":
        return deflated_power(op, k, tol, max_iter, seed, return_vectors, start)
    raise ValueError(f"method must be 'lanczos' or 'power', got {method!r}")


def smallest_eigenvalue(
    op,
    *,
    tol: float = 1e-4,
    max_iter: int | None = None,
    seed: int = 0,
    return_vectors: bool = False,
    start: str | Tensor = "random",
) -> EigenResult:
    """The algebraically smallest eigenvalue, by Lanczos read at the bottom of the spectrum.

    The same process as :func:`top_eigenvalues`, stopping when the smallest Ritz value has
    relative residual ``<= tol`` (the Krylov space holds both ends of the spectrum at once).
    A smallest eigenvalue near zero (a Hessian near a minimum) needs an absolute residual of
    ``tol * |lambda_min|``: expect many steps, or ``converged=False``. ``start``: as for
    :func:`top_eigenvalues`, but ``"random"`` by default (the gradient weighs the top).
    """
    check_request(op, 1, tol, max_iter)
    return _lanczos_extreme(op, 1, False, tol, max_iter, seed, return_vectors, start)
