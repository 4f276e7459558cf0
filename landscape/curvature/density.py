"""The spectral density of a symmetric operator by stochastic Lanczos quadrature (SLQ).

The density of states ``phi(t) = (1/n) sum_i delta(t - lambda_i)`` is estimated as in Ghorbani,
Krishnan & Xiao, "An investigation into neural net optimization via Hessian eigenvalue
density" (ICML 2019), Lin, Saad & Yang, "Approximating spectral densities of large matrices"
(SIAM Review 2016), and PyHessian's ``density`` (Yao et al. 2020):

1. for each of ``probes`` unit Rademacher vectors ``v``, ``steps`` Lanczos steps with full
   reorthogonalisation give a tridiagonal ``T`` (one product per step);
2. the eigenvalues ``theta_i`` of ``T`` (nodes) and the squared first components ``tau_i`` of
   its eigenvectors (weights, summing to 1) are the ``steps``-point Gauss quadrature of the
   measure ``sum_j (v^T u_j)^2 delta(t - lambda_j)``, whose mean over ``v`` is ``phi``: for
   any polynomial ``p`` of degree ``<= 2 steps - 1``, ``sum_i tau_i p(theta_i) = v^T p(H) v``
   exactly, an unbiased estimate of ``tr(p(H)) / n``;
3. each node becomes a Gaussian of standard deviation ``sigma``, averaged over the probes, and
   the result is normalised to integrate to 1 over the grid (trapezoid rule).

``sigma`` defaults to ``SIGMA_FRACTION = 0.005`` of the width ``max(theta) - min(theta)`` of
all nodes: with the default 1,000-point grid that is about five grid spacings, smooth enough
for the trapezoid rule to integrate each Gaussian to rounding and narrow enough to keep the
isolated top eigenvalues of a Hessian apart. (PyHessian's ``sigma^2 = 1e-5 max(1, width)``
gives ``sigma = 0.1`` at width 1,000, a tenth of a spacing of such a grid; hessian-eigenthings'
``width / steps`` blurs a Hessian's bulk into one bump.) For the bulk's shape, pass a smaller
``sigma`` with a finer ``grid``. The default grid spans the nodes plus ``5 sigma`` each side.
The smoothing adds ``sigma^2`` to the second moment: :meth:`DensityResult.moments` reads
either.

A breakdown (an invariant Krylov space, e.g. an operator with few distinct eigenvalues) is
exact: the Lanczos process continues from a vector orthogonal to it, whose nodes get weight 0.

The probes are independent: :func:`slq_quadrature` computes the nodes and weights of any
subset of them (what :mod:`landscape.mpi.curvature` splits across ranks) and
:func:`density_result` turns the nodes and weights of all of them into the smoothed density, so
the probes of one seed give the same nodes whichever process runs them. The start vectors come
from one CPU generator seeded with ``seed``, in probe order; a breakdown restart of probe ``j``
draws from a generator of its own (seeded with ``(seed, j)``), so it does not shift the probes
after it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from landscape.curvature.eigen import Lanczos
from landscape.curvature.results import DensityResult, trapezoid

__all__ = [
    "DENSITY_OPTIONS",
    "SIGMA_FRACTION",
    "DensitySettings",
    "density_result",
    "slq_quadrature",
    "spectral_density",
]

#: default Gaussian width, as a fraction of the spread of the quadrature nodes
SIGMA_FRACTION = 0.005
#: half-width of the default grid beyond the outermost nodes, in units of sigma
GRID_MARGIN = 5.0


def _rademacher(op, generator: torch.Generator) -> torch.Tensor:
    signs = torch.randint(0, 2, (op.size,), generator=generator).double() * 2 - 1
    return (signs / math.sqrt(op.size)).to(device=op.device, dtype=op.dtype)


def _quadrature(
    op, steps: int, start: torch.Tensor, restarts: torch.Generator
) -> tuple[np.ndarray, np.ndarray]:
    lanczos = Lanczos(op, start, restarts, capacity=steps)
    for _ in range(steps):
        lanczos.step()
    theta, eigvecs = lanczos.ritz()
    return theta, eigvecs[0] ** 2


def _restart_generator(seed: int, probe: int) -> torch.Generator:
    state = np.random.SeedSequence([int(seed), int(probe)]).generate_state(1, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0]) & 0x7FFF_FFFF_FFFF_FFFF)


def slq_quadrature(
    op, *, probes: int, steps: int, seed: int = 0, indices=None
) -> tuple[np.ndarray, np.ndarray]:
    """The Gauss quadrature (nodes, weights), each ``(len(indices), min(steps, n))``, of the
    probes ``indices`` (default: ``range(probes)``, in that order) of ``probes`` probes drawn
    with ``seed``: the same rows whichever subset is asked for (the start vectors of the
    others are drawn and skipped, no products)."""
    wanted = range(probes) if indices is None else [int(i) for i in indices]
    if any(not 0 <= j < probes for j in wanted):
        raise ValueError(f"probe indices must lie in [0, {probes}), got {list(wanted)}")
    generator = torch.Generator().manual_seed(seed)
    steps = min(steps, op.size)
    starts = {}
    for j in range(max(wanted, default=-1) + 1):
        start = _rademacher(op, generator)
        if j in wanted:
            starts[j] = start
    runs = [_quadrature(op, steps, starts[j], _restart_generator(seed, j)) for j in wanted]
    empty = np.zeros((0, steps))
    nodes = np.stack([theta for theta, _ in runs]) if runs else empty
    weights = np.stack([tau for _, tau in runs]) if runs else empty
    return nodes, weights


def _smooth(grid: np.ndarray, nodes: np.ndarray, weights: np.ndarray, sigma: float) -> np.ndarray:
    density = np.zeros_like(grid)
    norm = 1.0 / (sigma * math.sqrt(2 * math.pi))
    for theta, tau in zip(nodes, weights):  # one probe at a time: a (grid, steps) block
        gaussians = np.exp(-0.5 * ((grid[:, None] - theta[None, :]) / sigma) ** 2)
        density += norm * (gaussians @ tau)
    return density / len(nodes)


@dataclass(frozen=True, eq=False)
class DensitySettings:
    """The options of :func:`spectral_density`, checked (``ValueError`` for any it cannot
    take), with ``grid`` as a float64 array (or None); see there for their meaning."""

    probes: int = 4
    steps: int = 64
    sigma: float | None = None
    grid: np.ndarray | None = None
    grid_points: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        probes, steps, sigma, grid = self.probes, self.steps, self.sigma, self.grid
        if not isinstance(probes, int) or probes < 1:
            raise ValueError(f"probes must be a positive integer, got {probes!r}")
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        if sigma is not None and not sigma > 0:
            raise ValueError(f"sigma must be > 0 or None, got {sigma}")
        if grid is None and (not isinstance(self.grid_points, int) or self.grid_points < 2):
            raise ValueError(f"grid_points must be an integer >= 2, got {self.grid_points!r}")
        if grid is not None:
            grid = np.asarray(grid, dtype=np.float64)
            if grid.ndim != 1 or len(grid) < 2 or not np.all(np.diff(grid) > 0):
                raise ValueError("grid must be a 1-D increasing array of at least 2 points")
            object.__setattr__(self, "grid", grid)


#: the keyword options of :func:`spectral_density` (the fields of :class:`DensitySettings`)
DENSITY_OPTIONS = tuple(f.name for f in fields(DensitySettings))


def spectral_density(op, **options: Any) -> DensityResult:
    """Smoothed spectral density of ``op`` by stochastic Lanczos quadrature.

    Args:
        op: an operator following the protocol (see :mod:`landscape.curvature`).
        options: keywords only, the fields of :class:`DensitySettings`:
        probes: number of random (Rademacher) start vectors; the estimate's variance falls as
            ``1 / (probes * n)`` for a well-spread spectrum.
        steps: Lanczos steps per probe (products per probe; capped at ``op.size``).
        sigma: standard deviation of the Gaussian on each node; default
            ``SIGMA_FRACTION * (max node - min node)``.
        grid: the eigenvalue axis (sorted, 1-D); default ``grid_points`` points over the
            nodes plus ``5 sigma`` on each side. The density is normalised over this grid.
        grid_points: size of the default grid.
        seed: seeds the CPU generator of the probes.

    Returns:
        :class:`~landscape.curvature.results.DensityResult` with ``nodes`` and ``weights`` of
        shape ``(probes, min(steps, n))``; ``hvp_count = probes * min(steps, n)``.
    """
    settings = DensitySettings(**options)
    start, count0 = time.perf_counter(), op.hvp_count
    nodes, weights = slq_quadrature(
        op, probes=settings.probes, steps=settings.steps, seed=settings.seed
    )
    return density_result(
        op,
        nodes,
        weights,
        settings,
        hvp_count=op.hvp_count - count0,
        seconds=time.perf_counter() - start,
    )


def density_result(
    op,
    nodes: np.ndarray,
    weights: np.ndarray,
    settings: DensitySettings,
    *,
    hvp_count: int,
    seconds: float,
) -> DensityResult:
    """The :class:`DensityResult` of the quadrature ``nodes`` / ``weights`` of all probes
    (``(probes, steps)`` each; see :func:`spectral_density` for ``sigma`` and ``grid``)."""
    probes, steps = nodes.shape
    sigma, grid, seed = settings.sigma, settings.grid, settings.seed
    low, high = float(nodes.min()), float(nodes.max())
    if sigma is None:
        width = high - low if high > low else max(abs(high), 1.0)  # one distinct eigenvalue
        sigma = SIGMA_FRACTION * width
    if grid is None:
        grid = np.linspace(
            low - GRID_MARGIN * sigma, high + GRID_MARGIN * sigma, settings.grid_points
        )
    density = _smooth(grid, nodes, weights, sigma)
    total = trapezoid(density, grid)
    if total > 0:
        density = density / total
    provenance = {
        **op.provenance(),
        "algorithm": "slq",
        "probes": probes,
        "steps": steps,
        "sigma": float(sigma),
        "grid_points": len(grid),
        "tol": None,
        "seed": int(seed),
    }
    return DensityResult(
        grid=grid,
        density=density,
        nodes=nodes,
        weights=weights,
        sigma=float(sigma),
        hvp_count=hvp_count,
        seed=int(seed),
        seconds=seconds,
        provenance=provenance,
    )
