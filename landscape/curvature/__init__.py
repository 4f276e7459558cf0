"""Curvature of a model's loss: Hessian eigenvalues, traces and spectra, and sharpness.

- :mod:`landscape.curvature.analysis`: one call per quantity on ``(model, data)`` with the
  surfaces' protocol (subset, loss, parameters, mode, GGN): :func:`hessian_eigenvalues`,
  :func:`hessian_smallest_eigenvalue`, :func:`hessian_trace`, :func:`hessian_density`,
  :func:`layer_eigenvalues` (per-block top eigenvalues) and :func:`eigenvalue_ratio`
  (``lambda_max / lambda_k``); :mod:`~landscape.curvature.export`:
  :func:`eigenvector_directions` (eigenvectors as a direction file, ``normalisation="none"``).
- :mod:`landscape.curvature.hessian`: the 0.2 API, :func:`hessian_vector_product` and
  :func:`hessian_top_eigenvalue` (now Lanczos on :class:`HessianOperator`), for any model.
- :mod:`landscape.curvature.sharpness`: curvature and loss rise at a radius from computed 1D/2D
  surfaces (:class:`landscape.Surface` arrays); worst-case (m-, adaptive), average-case and
  Keskar's epsilon-sharpness in parameter space, as :class:`SharpnessResult` values.
- The linear algebra on any symmetric operator (``size``, ``dtype``, ``device``, ``hvp_count``,
  ``matvec``, ``matmat``, ``provenance``; see ``docs/curvature.md``):
  :mod:`~landscape.curvature.eigen` (top-k by Lanczos or deflated power iteration, the smallest
  eigenvalue), :mod:`~landscape.curvature.trace` (Hutchinson, Hutch++, XTrace),
  :mod:`~landscape.curvature.density` (stochastic Lanczos quadrature), their frozen results
  (:mod:`~landscape.curvature.results`) and :class:`DenseOperator`, an explicit matrix behind
  the same protocol. :class:`TopEigenvalueTracker` records λ_max every N optimizer steps
  (a step hook for any optimizer, and for both samlab trainers). The trace dispatcher is
  ``landscape.curvature.trace.trace``: it is not re-exported here, where its name would hide
  the ``trace`` submodule.
- :mod:`landscape.curvature.eigmap`: the largest and smallest eigenvalues over a 1-D/2-D grid
  (:func:`eigenvalue_map`, :class:`EigenMap`; resumable HDF5, MPI).
"""

from landscape.curvature.analysis import (
    eigenvalue_ratio,
    hessian_density,
    hessian_eigenvalues,
    hessian_operator,
    hessian_smallest_eigenvalue,
    hessian_trace,
    layer_eigenvalues,
)
from landscape.curvature.dense import DenseOperator
from landscape.curvature.density import spectral_density
from landscape.curvature.eigen import smallest_eigenvalue, top_eigenvalues
from landscape.curvature.eigmap import EigenMap, eigenvalue_map, load_eigenvalue_map
from landscape.curvature.export import eigenvector_directions
from landscape.curvature.hessian import HessianEigen, hessian_top_eigenvalue, hessian_vector_product
from landscape.curvature.operator import HessianOperator
from landscape.curvature.results import DensityResult, EigenResult, TraceResult
from landscape.curvature.sharpness import (
    CIRCLE_POINTS,
    FIT_WINDOW,
    SharpnessResult,
    average_sharpness,
    epsilon_sharpness,
    sharpness_1d,
    sharpness_2d,
    sharpness_grid,
    worst_case_sharpness,
)
from landscape.curvature.trace import hutchinson, hutchpp, xtrace
from landscape.curvature.tracking import TopEigenvalueTracker

__all__ = [
    "CIRCLE_POINTS",
    "FIT_WINDOW",
    "DenseOperator",
    "DensityResult",
    "EigenMap",
    "EigenResult",
    "HessianEigen",
    "HessianOperator",
    "SharpnessResult",
    "TopEigenvalueTracker",
    "TraceResult",
    "average_sharpness",
    "eigenvalue_ratio",
    "eigenvector_directions",
    "eigenvalue_map",
    "epsilon_sharpness",
    "hessian_density",
    "hessian_eigenvalues",
    "hessian_operator",
    "hessian_smallest_eigenvalue",
    "hessian_top_eigenvalue",
    "hessian_trace",
    "hessian_vector_product",
    "hutchinson",
    "hutchpp",
    "layer_eigenvalues",
    "load_eigenvalue_map",
    "sharpness_1d",
    "sharpness_2d",
    "sharpness_grid",
    "smallest_eigenvalue",
    "spectral_density",
    "top_eigenvalues",
    "worst_case_sharpness",
    "xtrace",
]
