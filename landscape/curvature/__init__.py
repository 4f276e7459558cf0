"""Curvature of a model's loss: the Hessian's top eigenvalue, and sharpness read off surfaces.

- :mod:`landscape.curvature.operator`: :class:`HessianOperator`, the Hessian (or Gauss-Newton
  matrix) of a model's mean loss as a linear operator (products by double backward or
  forward-over-reverse, chosen by timing), the engine of every curvature algorithm.
- :mod:`landscape.curvature.hessian`: Hessian-vector products and the top eigenvalue by power
  iteration (shifted where the dominant eigenvalue is negative), for any model and loss.
- :mod:`landscape.curvature.sharpness`: curvature and loss rise at a radius from computed 1D/2D
  surfaces (:class:`landscape.Surface` arrays).
"""

from landscape.curvature.hessian import HessianEigen, hessian_top_eigenvalue, hessian_vector_product
from landscape.curvature.operator import HessianOperator
from landscape.curvature.sharpness import CIRCLE_POINTS, FIT_WINDOW, sharpness_1d, sharpness_2d

__all__ = [
    "CIRCLE_POINTS",
    "FIT_WINDOW",
    "HessianEigen",
    "HessianOperator",
    "hessian_top_eigenvalue",
    "hessian_vector_product",
    "sharpness_1d",
    "sharpness_2d",
]
