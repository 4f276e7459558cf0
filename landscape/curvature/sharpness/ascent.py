"""Projected gradient ascent in an L2 or L-inf ball: the inner maximisation of worst-case
sharpness.

:func:`projected_ascent` maximises ``f(gamma)`` over ``||gamma||_p <= radius`` (``p`` = 2 or
inf) from the better of ``gamma = 0`` and a random start (:func:`uniform_in_ball`):

- L2: ``gamma <- P(gamma + step * g / ||g||_2)``, ``P`` the Euclidean projection onto the ball
  (rescaling when outside);
- L-inf: ``gamma <- clip(gamma + step * sign(g), -radius, radius)``;

with ``g`` the gradient of ``f`` at the best point so far. A step that does not increase ``f``
is rejected and halves the step size; the best point seen is returned, so the result never
falls below ``f(0)``. The first step size is ``2 * radius``, as in Andriushchenko et al.
(2023). For a convex ``f`` every L2 step from a point on the sphere increases ``f`` (the
projected step moves along a direction of positive inner product with ``g``), and on
``f(gamma) = gamma^T A gamma / 2`` the iteration is power iteration on ``I + c A``, so it
converges to the top eigenvector.

.. note::
   Andriushchenko et al.'s code runs an Auto-PGD-like loop: momentum 0.75 between iterates and
   a step halving at fixed checkpoints when too few iterations improved. Here a step is taken
   from the best point only, and halved at once when it fails: a monotone, deterministic
   variant that needs no checkpoint schedule.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from landscape.curvature.sharpness.objective import Objective, Point, point

#: ``f(gamma, grad) -> Point``: the objective at ``gamma``, with its gradient when ``grad``
Evaluate = Callable[[Tensor, bool], Point]


def project(gamma: Tensor, norm: str, radius: float) -> Tensor:
    """The Euclidean projection of ``gamma`` onto ``{||gamma||_p <= radius}`` (a new tensor)."""
    if norm == "linf":
        return gamma.clamp(-radius, radius)
    length = float(torch.linalg.vector_norm(gamma))
    return gamma * (radius / length) if length > radius else gamma.clone()


def ascent_direction(grad: Tensor, norm: str) -> Tensor | None:
    """The steepest-ascent direction of unit ``p``-norm dual step (``sign(g)`` for L-inf,
    ``g / ||g||_2`` for L2); None when the gradient is zero."""
    if norm == "linf":
        direction = grad.sign()
        return direction if bool(direction.any()) else None
    length = float(torch.linalg.vector_norm(grad))
    return grad / length if length > 0.0 else None


def uniform_in_ball(
    dim: int,
    norm: str,
    radius: float,
    generator: torch.Generator,
    *,
    dtype: torch.dtype,
    device: torch.device,
) -> Tensor:
    """A point drawn uniformly from the ball ``||gamma||_p <= radius`` of dimension ``dim``:
    L-inf: every entry uniform in ``[-radius, radius]``; L2: a uniform direction (a normalised
    Gaussian) at radius ``radius * U^(1/dim)``. Drawn on the CPU from ``generator`` (so a seed
    gives the same start on every device), then moved to ``device``."""
    if norm == "linf":
        point = (2.0 * torch.rand(dim, generator=generator, dtype=dtype) - 1.0) * radius
    else:
        point = torch.randn(dim, generator=generator, dtype=dtype)
        length = float(torch.linalg.vector_norm(point))
        scale = float(torch.rand((), generator=generator, dtype=torch.float64)) ** (1.0 / dim)
        point = point * (radius * scale / max(length, 1e-300))
    return point.to(device)


def projected_ascent(
    evaluate: Evaluate,
    origin: Point,
    *,
    norm: str,
    radius: float,
    steps: int,
    step_size: float | None = None,
    start: Tensor | None = None,
) -> tuple[Point, int]:
    """Maximise ``f`` over the ball ``||gamma||_p <= radius``: ``(best point, evaluations)``.

    ``origin`` is ``f`` at ``gamma = 0`` with its gradient; ``start`` an optional first point
    (kept when ``f(start) > f(0)``); ``steps`` ascent steps of first size ``step_size``
    (None: ``2 * radius``), each one evaluation of ``f`` and its gradient. Stops early when
    the gradient at the best point is zero or the step has shrunk below ``1e-12 * radius``.
    """
    best, evaluations = origin, 0
    if radius == 0.0:
        return best, evaluations
    if start is not None:
        candidate = evaluate(project(start, norm, radius), True)
        evaluations += 1
        if candidate.loss > best.loss:
            best = candidate
    step = 2.0 * radius if step_size is None else float(step_size)
    for _ in range(steps):
        direction = ascent_direction(best.grad, norm)
        if direction is None or step < 1e-12 * radius:
            break
        candidate = evaluate(project(best.gamma + step * direction, norm, radius), True)
        evaluations += 1
        if candidate.loss > best.loss:
            best = candidate
        else:
            step *= 0.5
    return best, evaluations


def ascend(
    objective: Objective,
    chunk: tuple[Tensor, Tensor],
    mapping: Any,
    *,
    norm: str,
    radius: float,
    steps: int,
    step_size: float | None,
    generator: torch.Generator | None,
) -> tuple[Point, Point]:
    """``(origin, best)`` of ``f(gamma) = L_chunk(w + T gamma)`` (``T`` = ``mapping``, see
    :func:`~landscape.curvature.sharpness.objective.point`): ``f`` at ``gamma = 0`` and the
    best point of :func:`projected_ascent` over ``||gamma||_p <= radius``, started also from
    a point drawn by :func:`uniform_in_ball` from ``generator`` (none when ``generator`` is
    None or ``radius`` is 0)."""
    origin = point(objective, chunk, objective.weights.new_zeros(mapping.dim), True, mapping)
    start = None
    if generator is not None and radius > 0.0:
        start = uniform_in_ball(
            mapping.dim, norm, radius, generator, dtype=objective.dtype, device=objective.device
        )
    best, _ = projected_ascent(
        lambda gamma, grad: point(objective, chunk, gamma, grad, mapping),
        origin,
        norm=norm,
        radius=radius,
        steps=steps,
        step_size=step_size,
        start=start,
    )
    return origin, best
