"""Start vectors of the eigensolvers in :mod:`landscape.curvature.eigen`.

Random start vectors are Gaussian from a CPU ``torch.Generator`` seeded with ``seed``, then
moved to the operator's device and dtype, so a seed gives the same start on every device.

:func:`~landscape.curvature.eigen.top_eigenvalues` starts by default (``start="gradient"``)
from the loss gradient ``g`` of an operator that has one
(:meth:`~landscape.curvature.operator.HessianOperator.gradient`: free on one batch, where the
first-order graph kept for the products already holds it; one forward and backward per batch
otherwise), plus a seeded random component: ``g / ||g|| + 0.1 r`` with ``r`` the unit Gaussian
vector of ``start="random"``. The gradient lies mostly in the top eigenspace of the Hessian
(Gur-Ari, Roberts & Dyer 2018, "Gradient descent happens in a tiny subspace"), so it weighs the
top eigenvectors more than a random vector does; the random part keeps every eigenvector in the
start (a gradient orthogonal to the top eigenvector, or zero at a critical point, cannot hide it)
and makes the seed matter. Measured (Lanczos, products until ``lambda_1`` is within 1e-3 of
the exact value, 20 seeds; ``benchmarks/hessian.py`` for the ResNet): a digits MLP at
initialisation 12 against 11-21 (mean 14.6) from random vectors, after 60 Adam steps 5-6
against 5-9 (means 5.2 / 6.6), after 300 steps 5-6 against 4-8 (means 5.2 / 6.4); a CIFAR
ResNet-20 on one batch of 128 (5 seeds) 4 against 4, but the relative residual reached 1e-3
after 5 products instead of 6. For the top 5 it is about even (means 41 / 49, 19 / 18,
16 / 18 products). Operators without ``gradient()`` (a
:class:`~landscape.curvature.dense.DenseOperator`) start from the random vector;
``provenance["start"]`` says which start was used.

:func:`~landscape.curvature.eigen.smallest_eigenvalue` starts from the random vector by
default: the gradient's weight on the top eigenspace is no help at the bottom of the spectrum.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["GRADIENT_MIX", "STARTS", "gaussian_start", "start_vector"]

#: the named start vectors (a tensor is also accepted)
STARTS = ("gradient", "random")
#: the weight of the unit random vector added to the unit gradient in ``start="gradient"``
GRADIENT_MIX = 0.1


def gaussian_start(op, generator: torch.Generator) -> Tensor:
    """A unit Gaussian vector drawn on the CPU and moved to the operator's device and dtype."""
    vector = torch.randn(op.size, generator=generator, dtype=torch.float64)
    return (vector / vector.norm()).to(device=op.device, dtype=op.dtype)


def start_vector(op, start, generator: torch.Generator) -> tuple[Tensor, dict]:
    """The unit start vector for ``start`` (``"gradient"``, ``"random"`` or a tensor, see the
    module docstring) and the facts about it for the provenance (``start``, and
    ``start_mix`` / ``gradient_norm`` or ``start_note``)."""
    if isinstance(start, Tensor):
        if start.shape != (op.size,):
            raise ValueError(
                f"start must be 'gradient', 'random' or a tensor of shape ({op.size},), got "
                f"shape {tuple(start.shape)}"
            )
        norm = float(start.double().norm())
        if not (math.isfinite(norm) and norm > 0.0):
            raise ValueError("the start vector must be non-zero and finite")
        vector = start.detach().to(device=op.device, dtype=op.dtype)
        return vector / norm, {"start": "given"}
    if start not in STARTS:
        raise ValueError(f"start must be one of {STARTS} or a tensor, got {start!r}")
    random = gaussian_start(op, generator)
    if start == "random":
        return random, {"start": "random"}
    if not callable(getattr(op, "gradient", None)):
        return random, {"start": "random", "start_note": "the operator has no gradient()"}
    gradient = op.gradient().detach().to(device=op.device, dtype=op.dtype)
    norm = float(gradient.double().norm())
    if not (math.isfinite(norm) and norm > 0.0):
        return random, {"start": "random", "start_note": f"the gradient's norm is {norm}"}
    mixed = gradient / norm + GRADIENT_MIX * random
    facts = {"start": "gradient", "start_mix": GRADIENT_MIX, "gradient_norm": norm}
    return mixed / mixed.norm(), facts
