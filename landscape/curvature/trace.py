"""Stochastic trace estimators: Hutchinson, Hutch++ and XTrace, each with a standard error.

All three spend a budget of ``products`` operator products (``op.matmat`` in column blocks of
``block_size``) on random test vectors ``z`` with ``E[z z^T] = I``:

- **Hutchinson** (Hutchinson 1989; Avron & Toledo 2011): the mean of ``z_i^T H z_i``. Its
  variance is ``2 ||H||_F^2 / m`` for Gaussian vectors, less for Rademacher ones. Standard error:
  the sample standard deviation over ``sqrt(m)``.
- **Hutch++** (Meyer, Musco, Musco & Woodruff, SOSA 2021): a third of the budget sketches the
  top of the spectrum, ``Q = orth(H S)`` (``k`` products), ``tr(Q^T H Q)`` is computed exactly
  (``k`` more), and Hutchinson on the deflated ``(I - QQ^T) H (I - QQ^T)`` takes the rest. On a
  decaying spectrum (a Hessian's) the residual is small and the variance far below
  Hutchinson's. Standard error: that of the residual Hutchinson part (the sketch part is
  computed, not sampled).
- **A-Hutch++** (``hutchpp(..., adaptive=True)``; after Persson, Cortinovis & Kressner, SIAM J.
  Matrix Anal. Appl. 2022, "Improved variants of the Hutch++ algorithm", whose A-Hutch++
  chooses the sketch/residual split from the data), for a fixed budget: probes come in rounds
  of 4, 4, 8, 8, 16, ... Every probe is a Hutchinson sample of the currently deflated
  ``B = (I - P) A (I - P)`` plus ``tr(Q^T A Q)``, and its ``B z`` also sketches. After a round,
  ``||B||_F^2`` (the mean of ``||B z||^2``) and ``||B^2||_F^2`` (the mean square of the
  off-diagonal ``z_a^T B^2 z_b``) give the residual's effective rank; only if it is below the
  products left does the top left singular vector of the round's ``B Z`` join ``Q`` (one
  product ``A q``, whose exact Frobenius gain ``2 ||(I - P) A q||^2 - (q^T A q)^2`` decides
  whether the next one joins too). A flat spectrum is thus plain Hutchinson. Unbiased: each
  round's weight ``(1 - W) / products_left`` is fixed before its probes are drawn and the
  weights sum to one (optional stopping). Standard error: ``sqrt(sum w_j^2 (x_j - est)^2)``.
  Its sequential rounds do not depend on ``block_size``; the first round's undeflated
  samples keep their weight, so on a steeply decaying spectrum plain Hutch++ (and XTrace) are
  better (measured on a geometric 0.8^i spectrum, 120 products: RMS 9e-3 against 2e-5).
- **XTrace** (Epperly, Tropp & Webber, SIAM J. Matrix Anal. Appl. 2024, "XTrace: making the
  most of every sample in stochastic trace estimation"): ``s = m / 2`` test vectors are used
  both to sketch and to probe. For each ``i``, ``Q_(i)`` is a basis of the sketch ``H Omega``
  *without* column ``i``, and ``T_i = tr(Q_(i)^T H Q_(i)) + w_i^T (I - P_i) H (I - P_i) w_i``
  with ``P_i = Q_(i) Q_(i)^T`` is unbiased because ``w_i`` is independent of ``Q_(i)``. The
  estimate is the mean of the ``s`` exchangeable ``T_i``, all computed from ``H Omega`` and
  ``H Q`` (``Q = orth(H Omega)``: ``s + s`` products) by rank-one downdates. With
  ``distribution="sphere"`` (the default) it is the paper's *improved* estimator: test vectors
  uniform on the sphere of radius ``sqrt(n)``, each projected probe rescaled to the expected
  length ``sqrt(n - s + 1)`` of its complement. Standard error: the standard deviation of the
  ``T_i`` over ``sqrt(s)``.

Test vectors are drawn one at a time on a CPU ``torch.Generator`` seeded with ``seed`` (float64,
then moved to the operator's device and dtype), so the result does not depend on ``block_size``.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import Tensor

from landscape.curvature.results import TraceResult

__all__ = ["DISTRIBUTIONS", "hutchinson", "hutchpp", "trace", "xtrace"]

#: test-vector distributions: random signs, standard Gaussian, uniform on the sqrt(n)-sphere
DISTRIBUTIONS = ("rademacher", "gaussian", "sphere")


def _probes(op, count: int, distribution: str, generator: torch.Generator) -> Tensor:
    columns = []
    for _ in range(count):
        if distribution == "rademacher":
            z = torch.randint(0, 2, (op.size,), generator=generator).double() * 2 - 1
        else:
            z = torch.randn(op.size, generator=generator, dtype=torch.float64)
            if distribution == "sphere":
                z = z * (math.sqrt(op.size) / z.norm())
        columns.append(z)
    return torch.stack(columns, dim=1).to(device=op.device, dtype=op.dtype)


def _apply(op, V: Tensor, block_size: int) -> Tensor:
    """``H @ V`` through ``op.matmat`` in column blocks."""
    return torch.cat(
        [op.matmat(V[:, i : i + block_size]) for i in range(0, V.shape[1], block_size)], dim=1
    )


def _column_dots(A: Tensor, B: Tensor) -> np.ndarray:
    return (A.double() * B.double()).sum(dim=0).cpu().numpy()


def _stderr(samples: np.ndarray) -> float:
    return (
        float(np.std(samples, ddof=1) / math.sqrt(len(samples))) if len(samples) > 1 else math.inf
    )


def _validate(op, products, minimum, distribution, tol, block_size) -> None:
    if not isinstance(products, int) or products < minimum:
        raise ValueError(f"products must be an integer >= {minimum}, got {products!r}")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    if tol is not None and not tol > 0:
        raise ValueError(f"tol must be > 0 or None, got {tol}")
    if not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive integer, got {block_size!r}")


def _result(op, method, estimate, stderr, history, seed, count0, start, settings) -> TraceResult:
    return TraceResult(
        trace=float(estimate),
        stderr=float(stderr),
        hvp_count=op.hvp_count - count0,
        method=method,
        history=tuple(float(h) for h in history),
        seed=int(seed),
        seconds=time.perf_counter() - start,
        provenance={**op.provenance(), "algorithm": method, **settings, "seed": int(seed)},
    )


def _sampled(op, offset, products, distribution, generator, tol, block_size, project=None):
    """Hutchinson samples ``z^T H z`` (of ``(I - QQ^T) H (I - QQ^T)`` when ``project`` is
    given) in blocks; stops early once ``stderr <= tol * |offset + mean|``."""
    samples: list[float] = []
    while len(samples) < products:
        Z = _probes(op, min(block_size, products - len(samples)), distribution, generator)
        if project is not None:
            Z = Z - project @ (project.T @ Z)
        samples.extend(_column_dots(Z, op.matmat(Z)).tolist())
        if tol is not None and len(samples) > 1:
            if _stderr(np.asarray(samples)) <= tol * abs(offset + float(np.mean(samples))):
                break
    samples = np.asarray(samples)
    history = offset + np.cumsum(samples) / np.arange(1, len(samples) + 1)
    return samples, history


def hutchinson(
    op,
    products: int,
    *,
    seed: int = 0,
    distribution: str = "rademacher",
    tol: float | None = None,
    block_size: int = 16,
) -> TraceResult:
    """Hutchinson's estimate of ``tr(H)`` from ``products >= 2`` test vectors.

    With ``tol``, probing stops early (after a block) once the standard error is at most
    ``tol * |estimate|``; ``products`` is then the budget. ``history``: the running mean.
    """
    _validate(op, products, 2, distribution, tol, block_size)
    start, count0 = time.perf_counter(), op.hvp_count
    generator = torch.Generator().manual_seed(seed)
    samples, history = _sampled(op, 0.0, products, distribution, generator, tol, block_size)
    settings = {"products": products, "distribution": distribution, "tol": tol}
    return _result(
        op, "hutchinson", samples.mean(), _stderr(samples), history, seed, count0, start, settings
    )


def _rounds(products: int):
    """Decision points of the adaptive Hutch++: rounds of 4, 4, 8, 8, 16, 16, ... probes."""
    size, count = 4, 0
    while True:
        yield size
        count += 1
        if count % 2 == 0:
            size *= 2


def _adaptive(op, products, distribution, generator, block_size):
    """A-Hutch++ for a fixed budget; returns (estimate, stderr, history, sketch size)."""
    n = op.size
    Q = torch.zeros(n, 0, dtype=op.dtype, device=op.device)
    low, weight, left = 0.0, 0.0, products
    samples, weights, history = [], [], []
    rounds = _rounds(products)
    while left > 0:
        size = min(next(rounds), left)
        if left - size < 2:  # too few products for a direction and a probe after it
            size = left
        share = (1.0 - weight) / left  # predictable: fixed before the round's probes are drawn
        V = _probes(op, size, distribution, generator)
        V = V - Q @ (Q.T @ V)
        AV = _apply(op, V, block_size)  # A (I - P) z
        values = low + _column_dots(V, AV)
        samples.extend(values.tolist())
        weights.extend([share] * size)
        weight += share * size
        left -= size
        total = float(np.dot(weights, samples)) / weight
        history.append(total)
        if left < 2 or size < 2:
            continue
        Y = AV - Q @ (Q.T @ AV)  # B z with B = (I - P) A (I - P)
        gram = (Y.T @ Y).double().cpu()
        frobenius = float(gram.diagonal().mean())  # E ||B z||^2 = ||B||_F^2
        off = gram[~torch.eye(size, dtype=torch.bool)]
        fourth = float((off**2).mean())  # E (z_a^T B^2 z_b)^2 = ||B^2||_F^2
        if not left * fourth > frobenius**2:  # the residual's effective rank exceeds the budget
            continue
        U = torch.linalg.svd(Y, full_matrices=False).U
        for u in U.T:
            u = u - Q @ (Q.T @ u)
            u = u - Q @ (Q.T @ u)
            norm = float(u.norm())
            if not norm > 1e-8 or left < 2:
                break
            u = (u / norm)[:, None]
            Au = _apply(op, u, block_size)
            left -= 1
            rayleigh = float(_column_dots(u, Au)[0])
            residual = Au - Q @ (Q.T @ Au)
            gain = 2 * float(_column_dots(residual, residual)[0]) - rayleigh**2
            Q, low = torch.cat([Q, u], 1), low + rayleigh
            frobenius = max(frobenius - gain, 0.0)
            if not gain * left > frobenius:
                break
    samples, weights = np.asarray(samples), np.asarray(weights)
    estimate = float(np.dot(weights, samples))
    spread = (
        np.sum(weights**2 * (samples - estimate) ** 2) * len(samples) / max(len(samples) - 1, 1)
    )
    stderr = math.sqrt(spread) if len(samples) > 1 else math.inf
    return estimate, stderr, history, Q.shape[1]


def hutchpp(
    op,
    products: int,
    *,
    seed: int = 0,
    distribution: str = "rademacher",
    tol: float | None = None,
    block_size: int = 16,
    adaptive: bool = False,
) -> TraceResult:
    """Hutch++'s estimate of ``tr(H)`` from ``products >= 4`` products.

    ``adaptive=True``: the adaptive variant (A-Hutch++, after Persson, Cortinovis & Kressner,
    SIAM J. Matrix Anal. Appl. 2022) described in the module docstring: the split between sketch
    and probes follows the data, every probe is also a sample, no early stop (``tol`` must be
    None). Otherwise plain Hutch++:

    ``k = min(products // 3, n)`` sketch vectors, ``k`` products for ``H Q``, and
    ``products - 2k >= 2`` residual test vectors (two at least, for a standard error). With
    ``tol``, the residual probing stops early once its standard error is at most
    ``tol * |estimate|``.
    ``history``: the running estimate over the residual samples.
    """
    _validate(op, products, 4, distribution, tol, block_size)
    start, count0 = time.perf_counter(), op.hvp_count
    generator = torch.Generator().manual_seed(seed)
    settings = {"products": products, "distribution": distribution, "tol": tol}
    if adaptive:
        if tol is not None:
            raise ValueError("adaptive hutch++ has no early stop: pass tol=None")
        estimate, stderr, history, k = _adaptive(op, products, distribution, generator, block_size)
        settings.update(sketch=k, adaptive=True)
        return _result(op, "hutch++", estimate, stderr, history, seed, count0, start, settings)
    k = min(products // 3, op.size)
    sketch = _apply(op, _probes(op, k, distribution, generator), block_size)
    Q = torch.linalg.qr(sketch).Q
    low_rank = float(_column_dots(Q, _apply(op, Q, block_size)).sum())
    samples, history = _sampled(
        op, low_rank, products - 2 * k, distribution, generator, tol, block_size, project=Q
    )
    settings.update(sketch=k, adaptive=False)
    estimate = low_rank + samples.mean()
    return _result(
        op, "hutch++", estimate, _stderr(samples), history, seed, count0, start, settings
    )


def xtrace(
    op,
    products: int,
    *,
    seed: int = 0,
    distribution: str = "sphere",
    block_size: int = 16,
) -> TraceResult:
    """XTrace's estimate of ``tr(H)`` from an even ``products >= 4`` (``s = products / 2``
    test vectors, ``s`` products for the sketch and ``s`` for ``H Q``).

    ``distribution="sphere"`` gives the improved (normalised) estimator; ``"rademacher"`` and
    ``"gaussian"`` the plain one. The default is the sphere by measurement
    (``benchmarks/hessian.py --sections trace``, exact Hessian of the digits MLP, relative RMS
    error sphere vs Rademacher, 10-200 seeds per m): at initialisation 5.9e-2 vs 1.0e-1 at
    m=192 and 1.7e-2 vs 6.2e-2 at m=384, within a standard error of each other below; after
    training within about one standard error at every m (6.6e-2 vs 6.1e-2 at m=6,
    2.5e-2 vs 3.0e-2 at m=24, 2.9e-3 vs 2.5e-3 at m=384).
    ``history`` is empty: the ``s`` estimates share one sketch.

    .. note:: The sketch must have full column rank ``s``; an operator of rank below ``s``
       raises ``ValueError`` (its trace is then ``tr(Q^T H Q)`` of any sketch: use Hutch++).
    """
    _validate(op, products, 4, distribution, None, block_size)
    if products % 2:
        raise ValueError(f"xtrace spends products in pairs: products must be even, got {products}")
    start, count0 = time.perf_counter(), op.hvp_count
    generator = torch.Generator().manual_seed(seed)
    s, n = products // 2, op.size
    if s > n:
        raise ValueError(f"xtrace needs products / 2 <= size = {n}, got products = {products}")
    omega = _probes(op, s, distribution, generator)
    Y = _apply(op, omega, block_size)
    Q, R = torch.linalg.qr(Y)
    Z = _apply(op, Q, block_size)
    R64 = R.double().cpu()
    diagonal = R64.diagonal().abs()
    if not float(diagonal.min()) > 1e3 * torch.finfo(op.dtype).eps * float(diagonal.max()):
        raise ValueError("xtrace: the sketch H @ Omega is rank deficient (rank(H) < products/2)")
    # s_i: the unit vector orthogonal to every column of R but the i-th (row i of R^-1).
    R_inverse = torch.linalg.solve_triangular(R64, torch.eye(s, dtype=torch.float64), upper=True)
    S = (R_inverse / R_inverse.norm(dim=1, keepdim=True)).T  # column i is s_i
    W = (Q.T @ omega).double().cpu()  # w_i = Q^T omega_i
    small = (Q.T @ Z).double().cpu()
    small = (small + small.T) / 2  # Q^T H Q
    d = (S * W).sum(dim=0)  # s_i^T w_i
    correction = torch.as_tensor(S * d - W, dtype=op.dtype, device=op.device)
    U = omega + Q @ correction  # (I - P_i) omega_i
    HU = Y + Z @ correction  # H (I - P_i) omega_i
    quadratic = torch.as_tensor(_column_dots(U, HU))
    low_rank = small.trace() - (S * (small @ S)).sum(dim=0)  # tr(P_i H)
    if distribution == "sphere":
        quadratic = quadratic * (n - s + 1) / torch.as_tensor(_column_dots(U, U))
    estimates = (low_rank + quadratic).numpy()
    settings = {"products": products, "distribution": distribution, "tol": None}
    return _result(
        op, "xtrace", estimates.mean(), _stderr(estimates), (), seed, count0, start, settings
    )


def trace(
    op,
    method: str = "hutch++",
    products: int = 99,
    *,
    tol: float | None = None,
    seed: int = 0,
    distribution: str | None = None,
    block_size: int = 16,
) -> TraceResult:
    """Estimate ``tr(H)`` with ``method`` in ``"hutchinson"``, ``"hutch++"``, ``"xtrace"``.

    ``products`` is the budget of operator products; ``tol`` (Hutchinson and Hutch++ only)
    stops early once the standard error is at most ``tol * |estimate|``. ``distribution``:
    each estimator's default when ``None`` (Rademacher; XTrace: the sphere).
    """
    options = {"seed": seed, "block_size": block_size}
    if distribution is not None:
        options["distribution"] = distribution
    if method == "hutchinson":
        return hutchinson(op, products, tol=tol, **options)
    if method == "hutch++":
        return hutchpp(op, products, tol=tol, **options)
    if method == "xtrace":
        if tol is not None:
            raise ValueError("xtrace has no early stop: pass tol=None, or use hutch++")
        return xtrace(op, products, **options)
    raise ValueError(f"method must be 'hutchinson', 'hutch++' or 'xtrace', got {method!r}")
