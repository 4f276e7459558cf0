"""Curvature of a model's loss: Hessian eigenvalues, traces and spectra, and sharpness.

- :mod:`landscape.curvature.hessian`: Hessian-vector products and the top eigenvalue by power
  iteration (shifted where the dominant eigenvalue is negative), for any model and loss.
- :mod:`landscape.curvature.sharpness`: curvature and loss rise at a radius from computed 1D/2D
  surfaces (:class:`landscape.Surface` arrays); worst-case (m-, adaptive), average-case and
  Keskar's epsilon-sharpness in parameter space, as :class:`SharpnessResult` values.
- The linear algebra on any symmetric operator (``size``, ``dtype``, ``device``, ``hvp_count``,
  ``matvec``, ``matmat``, ``provenance``; see ``docs/curvature.md``):
  :mod:`~landscape.curvature.eigen` (top-k by Lanczos or deflated power iteration, the smallest
  eigenvalue), :mod:`~landscape.curvature.trace` (Hutchinson, Hutch++, XTrace),
  :mod:`~landscape.curvature.density` (stochastic Lanczos quadrature), their frozen results
  (:mod:`~landscape.curvature.results`) and :class:`DenseOperator`, an explicit matrix behind
  the same protocol. The trace dispatcher is ``landscape.curvature.trace.trace``: it is not
  re-exported here, where its name would hide the ``trace`` submodule.
- :mod:`landscape.curvature.eigmap`: the largest and smallest eigenvalues over a 1-D/2-D grid
  (:func:`eigenvalue_map`, :class:`EigenMap`; resumable HDF5, MPI).
"""

from landscape.curvature.dense import DenseOperator
from landscape.curvature.density import spectral_density
from landscape.curvature.eigen import smallest_eigenvalue, top_eigenvalues
from landscape.curvature.eigmap import EigenMap, eigenvalue_map, load_eigenvalue_map
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
    "TraceResult",
    "average_sharpness",
    "eigenvalue_map",
    "epsilon_sharpness",
    "hessian_top_eigenvalue",
    "hessian_vector_product",
    "hutchinson",
    "hutchpp",
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
