"""Hessian eigenvalue maps over a 1-D or 2-D grid (loss-landscape's ``plot_hessian_eigen.py``).

- :func:`eigenvalue_map`: ``max_eig`` / ``min_eig`` of the mean loss at every grid point, on one
  process or MPI ranks, resumable in HDF5 (:mod:`~landscape.curvature.eigmap.compute`);
- :class:`EigenMap` (frozen result) and :func:`load_eigenvalue_map`;
- :class:`EigenvalueEvaluator` and :func:`extreme_eigenvalues` (both ends from one Lanczos
  process), :mod:`~landscape.curvature.eigmap.evaluator`.

Plots: :func:`landscape.plot.eigmap.plot_eig_ratio` and
:func:`landscape.plot.eigmap.plot_max_eig`.
"""

from landscape.curvature.eigmap.compute import EigenMap, eigenvalue_map, load_eigenvalue_map
from landscape.curvature.eigmap.evaluator import METRICS, EigenvalueEvaluator, extreme_eigenvalues

__all__ = [
    "METRICS",
    "EigenMap",
    "EigenvalueEvaluator",
    "eigenvalue_map",
    "extreme_eigenvalues",
    "load_eigenvalue_map",
]
