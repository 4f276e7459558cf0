"""Keskar et al.'s epsilon-sharpness, in the full parameter space or a random subspace.

Keskar, Mudigere, Nocedal, Smelyanskiy and Tang, "On large-batch training for deep learning:
generalization gap and sharp minima" (ICLR 2017), Sec. 2.2.2: with ``A`` an ``n x p`` matrix,

    phi(w, epsilon, A) = 100 * (max_{y in C} L(w + A y) - L(w)) / (1 + L(w)),
    C = {y in R^p : |y_i| <= epsilon * (|(A^+ w)_i| + 1)},

``A^+`` the pseudo-inverse. ``A = I_n`` is the full space, where the box is
``|delta_i| <= epsilon * (|w_i| + 1)``; for large networks the paper also uses a random
``A`` with ``p = 100`` columns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from landscape.curvature.sharpness.ascent import ascend
from landscape.curvature.sharpness.objective import (
    Diagonal,
    check_count,
    check_radius,
    evaluation_mode,
    prepare,
)
from landscape.curvature.sharpness.results import SharpnessResult
from landscape.curvature.sharpness.subspace import RandomSubspace

__all__ = ["KESKAR_SUBSPACE_DIM", "MAX_FULL_DIM", "epsilon_sharpness"]

#: parameter count above which ``subspace_dim=None`` switches to a random subspace
MAX_FULL_DIM = 1_000_000
#: the random subspace's dimension then (Keskar et al.'s ``p``)
KESKAR_SUBSPACE_DIM = 100


class BoxInSubspace:
    """The map ``delta = A (bounds * gamma)`` of ``gamma`` in ``[-1, 1]^p``."""

    def __init__(self, subspace: RandomSubspace, bounds: Tensor) -> None:
        self.subspace, self.bounds, self.dim = subspace, bounds, subspace.dim

    def forward(self, gamma: Tensor) -> Tensor:
        return self.subspace.forward(self.bounds * gamma)

    def adjoint(self, grad: Tensor) -> Tensor:
        return self.bounds * self.subspace.adjoint(grad)


def epsilon_sharpness(
    model: nn.Module,
    data: Any,
    epsilon: float = 1e-3,
    *,
    loss: str | Callable[[Tensor, Tensor], Tensor] = "crossentropy",
    subspace_dim: int | None = None,
    max_full_dim: int = MAX_FULL_DIM,
    steps: int = 20,
    step_size: float | None = None,
    random_start: bool = True,
    logit_normalise: bool = False,
    subset: int | Any | None = None,
    subset_seed: int = 0,
    seed: int = 0,
    batch_size: int | None = None,
) -> SharpnessResult:
    """Keskar et al.'s epsilon-sharpness ``100 * (max L(w + delta) - L(w)) / (1 + L(w))``.

    The maximum is over the box ``|delta_i| <= epsilon * (|w_i| + 1)`` of the ``n`` trainable
    parameter entries, or, in a random subspace, over ``delta = A y`` with ``A`` an ``n x p``
    matrix of i.i.d. ``N(0, 1)`` entries (:class:`RandomSubspace`, generated in row blocks
    from ``seed``, never stored whole when large) and the box
    ``|y_i| <= epsilon * (|(A^+ w)_i| + 1)``. ``subspace_dim``: None chooses the full space
    when ``n <= max_full_dim`` and ``p = 100`` (the paper's) above; ``0`` forces the full
    space; ``p >= 1`` a subspace of that dimension. As in the paper ``A`` is not normalised:
    ``delta = A y`` has entries of size about ``epsilon * sqrt(p)``, outside the full-space box,
    so the subspace value is a different number (often larger), not a lower bound of it.

    The box is searched by projected sign-gradient ascent in box coordinates
    (``delta = bounds * gamma``, ``gamma`` in ``[-1, 1]^d``): ``steps`` steps of first size
    ``step_size`` (None: 2, the box's width) halved after each step that fails to increase the
    loss, from the better of ``delta = 0`` and a uniform random point of the box
    (``random_start``; ``seed``); see :mod:`landscape.curvature.sharpness.ascent`. The whole
    evaluation set is one objective (no ``m``).

    .. note::
       Keskar et al. maximised with L-BFGS-B (scipy, a few iterations) on the bound
       constraints. Projected sign ascent is the steepest ascent for a box, keeps the weights
       on the model's device (no copies to numpy per iteration), shares its code with the
       worst-case L-inf measure, and is exact in one step for a linear loss and at the
       minimum of a separable quadratic; like L-BFGS-B it gives a lower bound of the maximum.

    The model runs in eval mode, its weights are never written and each module's mode is
    restored; ``loss``, ``logit_normalise``, ``subset``, ``subset_seed`` and ``batch_size`` are
    as for :func:`~landscape.curvature.sharpness.worst_case_sharpness`. Returns a
    :class:`SharpnessResult` with ``measure="epsilon"``, ``norm="box"``, ``rho=epsilon``,
    ``value`` the percentage above and ``loss_increase`` the raw rise;
    ``settings["subspace_dim"]`` is ``p`` (None for the full space).
    """
    epsilon = check_radius("epsilon", epsilon)
    steps = check_count("steps", steps, 0)
    max_full_dim = check_count("max_full_dim", max_full_dim, 0)
    if subspace_dim is not None:
        subspace_dim = check_count("subspace_dim", subspace_dim, 0)
    if step_size is not None:
        step_size = check_radius("step_size", step_size)
    problem = prepare(
        model,
        data,
        loss=loss,
        chunk=None,
        subset=subset,
        subset_seed=subset_seed,
        logit_normalise=logit_normalise,
        batch_size=batch_size,
    )
    objective = problem.objective
    weights = objective.weights
    if subspace_dim is None:
        subspace_dim = KESKAR_SUBSPACE_DIM if objective.size > max_full_dim else 0
    with evaluation_mode(model):
        if subspace_dim == 0:
            mapping: Any = Diagonal(epsilon * (weights.abs() + 1.0), objective.size)
        else:
            subspace = RandomSubspace(
                objective.size, subspace_dim, seed=seed, dtype=weights.dtype, device=weights.device
            )
            bounds = epsilon * (subspace.pseudo_inverse_apply(weights).abs() + 1.0)
            mapping = BoxInSubspace(subspace, bounds)
        chunk = problem.evalset.batches[0]
        origin, best = ascend(
            objective,
            chunk,
            mapping,
            norm="linf",
            radius=1.0 if epsilon > 0.0 else 0.0,
            steps=steps,
            step_size=step_size,
            generator=torch.Generator().manual_seed(int(seed)) if random_start else None,
        )
    rise = best.loss - origin.loss
    return problem.result(
        "epsilon",
        references=[(origin.loss, origin.error)],
        perturbed=[(best.loss, best.error)],
        weights=[float(len(chunk[0]))],
        value=100.0 * rise / (1.0 + origin.loss),
        rho=epsilon,
        norm="box",
        adaptive=False,
        m=None,
        steps=steps,
        samples=None,
        seed=int(seed),
        settings={
            "box": "epsilon * (|w| + 1)" if subspace_dim == 0 else "epsilon * (|A^+ w| + 1)",
            "subspace_dim": subspace_dim or None,
            "step_size": 2.0 if step_size is None else step_size,
            "random_start": bool(random_start),
        },
    )
