"""Curvature of a model's loss: the Hessian's top eigenvalue, and sharpness read off surfaces.

- :mod:`landscape.curvature.hessian`: Hessian-vector products and the top eigenvalue by power
  iteration (shifted where the dominant eigenvalue is negative), for any model and loss.
- :mod:`landscape.curvature.sharpness`: curvature and loss rise at a radius from computed 1D/2D
  surfaces (:class:`landscape.Surface` arrays); worst-case (m-, adaptive), average-case and
  Keskar's epsilon-sharpness in parameter space, as :class:`SharpnessResult` values.
"""

from landscape.curvature.hessian import HessianEigen, hessian_top_eigenvalue, hessian_vector_product
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

__all__ = [
    "CIRCLE_POINTS",
    "FIT_WINDOW",
    "HessianEigen",
    "SharpnessResult",
    "average_sharpness",
    "epsilon_sharpness",
    "hessian_top_eigenvalue",
    "hessian_vector_product",
    "sharpness_1d",
    "sharpness_2d",
    "sharpness_grid",
    "worst_case_sharpness",
]
