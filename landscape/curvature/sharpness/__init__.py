"""Sharpness: read off computed surfaces, and measured in parameter space.

- :mod:`~landscape.curvature.sharpness.surface`: curvature and loss rise at a radius from
  computed 1D/2D surfaces (:func:`sharpness_1d`, :func:`sharpness_2d`).
- :mod:`~landscape.curvature.sharpness.worst_case`: worst-case m-sharpness in L2 / L-inf balls,
  adaptive and logit-normalised variants (Andriushchenko et al. 2023; Foret et al.; Kwon et al.).
- :mod:`~landscape.curvature.sharpness.average`: average-case sharpness under Gaussian or
  uniform weight noise (Andriushchenko et al. 2023).
- :mod:`~landscape.curvature.sharpness.keskar`: Keskar et al.'s epsilon-sharpness (ICLR 2017),
  in the full space or a random subspace (:class:`RandomSubspace`).
- :func:`sharpness_grid`: one measure over several radii; every measure returns a frozen
  :class:`SharpnessResult`.
"""

from landscape.curvature.sharpness.average import average_sharpness
from landscape.curvature.sharpness.grid import sharpness_grid
from landscape.curvature.sharpness.keskar import epsilon_sharpness
from landscape.curvature.sharpness.results import SharpnessResult
from landscape.curvature.sharpness.subspace import RandomSubspace
from landscape.curvature.sharpness.surface import (
    CIRCLE_POINTS,
    FIT_WINDOW,
    sharpness_1d,
    sharpness_2d,
)
from landscape.curvature.sharpness.worst_case import worst_case_sharpness

__all__ = [
    "CIRCLE_POINTS",
    "FIT_WINDOW",
    "RandomSubspace",
    "SharpnessResult",
    "average_sharpness",
    "epsilon_sharpness",
    "sharpness_1d",
    "sharpness_2d",
    "sharpness_grid",
    "worst_case_sharpness",
]
