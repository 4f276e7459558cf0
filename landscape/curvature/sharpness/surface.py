"""Sharpness read off computed loss surfaces: curvature at the centre and loss rise at a radius.

:func:`sharpness_1d` takes a 1D slice ``loss(x)`` through the centre, :func:`sharpness_2d` a 2D
surface ``(ny, nx)`` (element ``[i, j]`` at ``(x[j], y[i])``, the convention of
:class:`landscape.Surface`). Both interpolate with splines (scipy), so ``rho`` need not be a grid
point. ``rho`` is in the units of the surface's directions: with filter-normalised directions, at
``a = rho`` every filter has moved by ``rho`` times its own norm in a random direction. That is
not SAM's adversarial ``rho`` (an absolute step along the gradient): these numbers measure the
average flatness around the centre, not the worst case SAM minimises.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["CIRCLE_POINTS", "FIT_WINDOW", "sharpness_1d", "sharpness_2d"]

#: ``|a| <= FIT_WINDOW``: the window of the quadratic fit of a 1D slice (``curv_fit``)
FIT_WINDOW = 0.1
#: points of the circle ``|(a, b)| = rho`` on which a 2D surface's rise is averaged
CIRCLE_POINTS = 72


def sharpness_1d(
    x: Sequence[float], loss: Sequence[float], rho: float, *, window: float = FIT_WINDOW
) -> dict[str, float]:
    """Curvature at the centre and loss rise at ``±rho`` of a 1D slice ``loss(x)``.

    ``x`` must contain 0 with a point on each side. Returns ``loss_center``, ``fd_step`` (the
    larger neighbour distance ``h``), ``curv_fd`` (the three-point second difference, for
    unequal steps too), ``curv_fit`` (``2 c2`` of the least-squares quadratic over ``|x| <=
    max(window, h)``), ``rise1d`` (mean of ``L(rho)`` and ``L(-rho)`` minus ``L(0)``, from a
    cubic interpolating spline) and ``rise1d_max`` (the larger of the two rises).
    """
    from scipy.interpolate import make_interp_spline

    x = np.asarray(x, dtype=np.float64)
    loss = np.asarray(loss, dtype=np.float64)
    if x.shape != loss.shape or x.ndim != 1:
        raise ValueError(f"x and loss must be 1-D of one length, got {x.shape}, {loss.shape}")
    if not np.all(np.isfinite(loss)):
        raise ValueError("the 1D slice has points that are not computed (NaN)")
    centre = np.flatnonzero(np.isclose(x, 0.0, rtol=0.0, atol=1e-12))
    if centre.size != 1 or centre[0] in (0, x.size - 1):
        raise ValueError("the 1D slice needs x = 0 with a point on each side")
    c = int(centre[0])
    h_minus, h_plus = x[c] - x[c - 1], x[c + 1] - x[c]
    curv_fd = (
        2.0
        * (h_minus * loss[c + 1] - (h_minus + h_plus) * loss[c] + h_plus * loss[c - 1])
        / (h_minus * h_plus * (h_minus + h_plus))
    )
    step = max(h_minus, h_plus)
    near = np.abs(x) <= max(window, step) * (1 + 1e-9)
    curv_fit = 2.0 * np.polyfit(x[near], loss[near], 2)[0]
    spline = make_interp_spline(x, loss, k=min(3, x.size - 1))
    up, down = float(spline(rho)), float(spline(-rho))
    return {
        "loss_center": float(loss[c]),
        "fd_step": float(step),
        "curv_fd": float(curv_fd),
        "curv_fit": float(curv_fit),
        "rise1d": 0.5 * (up + down) - float(loss[c]),
        "rise1d_max": max(up, down) - float(loss[c]),
    }


def sharpness_2d(
    x: Sequence[float],
    y: Sequence[float],
    loss: np.ndarray,
    rho: float,
    *,
    points: int = CIRCLE_POINTS,
) -> dict[str, float]:
    """Loss rise on the circle of radius ``rho`` around the centre of a 2D surface.

    ``loss`` is ``(ny, nx)`` with element ``[i, j]`` at ``(x[j], y[i])``; the grid must contain
    ``(0, 0)``. Values on the circle come from a bicubic interpolating spline through the grid
    (exact for polynomials up to degree 3 in each coordinate). Returns ``rise2d`` (mean over
    ``points`` equally spaced angles minus ``L(0, 0)``), ``rise2d_max`` and ``loss_2d_max``
    (the largest loss on the grid).
    """
    from scipy.interpolate import RectBivariateSpline

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    loss = np.asarray(loss, dtype=np.float64)
    if loss.shape != (y.size, x.size):
        raise ValueError(f"loss must have shape (ny, nx) = {(y.size, x.size)}, got {loss.shape}")
    if not np.all(np.isfinite(loss)):
        raise ValueError("the 2D surface has points that are not computed (NaN)")
    cx = np.flatnonzero(np.isclose(x, 0.0, rtol=0.0, atol=1e-12))
    cy = np.flatnonzero(np.isclose(y, 0.0, rtol=0.0, atol=1e-12))
    if cx.size != 1 or cy.size != 1:
        raise ValueError("the 2D surface needs the point (0, 0) on its grid")
    centre = float(loss[cy[0], cx[0]])
    spline = RectBivariateSpline(y, x, loss, kx=min(3, y.size - 1), ky=min(3, x.size - 1), s=0)
    angles = np.linspace(0.0, 2.0 * math.pi, points, endpoint=False)
    circle = spline.ev(rho * np.sin(angles), rho * np.cos(angles))
    return {
        "rise2d": float(circle.mean()) - centre,
        "rise2d_max": float(circle.max()) - centre,
        "loss_2d_max": float(loss.max()),
    }
