"""Worst-case m-sharpness in an L2 or L-inf ball, optionally adaptive and logit-normalised.

Following Andriushchenko et al., "A modern look at the relationship between sharpness and
generalization" (ICML 2023), after Foret et al. (SAM, ICLR 2021) and Kwon et al. (ASAM, ICML
2021): the fixed evaluation set ``S`` is split into contiguous chunks ``S_1, ..., S_K`` of
``m`` samples, and

    S_max = sum_k |S_k| / |S| * max_{delta in B} [L_{S_k}(w + delta) - L_{S_k}(w)]

with ``B = {delta : ||delta||_p <= rho}`` (``p`` = 2 or inf), or for the adaptive measure
``B = {delta = c * gamma : ||gamma||_p <= rho}`` with ``c = |w| + eta`` elementwise. Each
inner maximum is approximated from below by projected gradient ascent
(:mod:`landscape.curvature.sharpness.ascent`) in ``gamma`` (``delta = c * gamma``), where the
ball is round and its projection exact.

.. note::
   Andriushchenko et al.'s code steps in ``delta`` (``delta += step * |w| * g / ||g||``) and
   projects onto the ellipsoid ``||delta / |w| ||_2 <= rho`` by bisection on a Lagrange
   multiplier. Stepping in ``gamma`` searches the same set; its L2 step is the steepest ascent
   in ``gamma`` (``c * g / ||c * g||``) and its projection a rescaling. The L-inf steps
   coincide (``sign`` of the gradient, clipping to ``rho * c``).
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
    check_norm,
    check_radius,
    evaluation_mode,
    prepare,
)
from landscape.curvature.sharpness.results import SharpnessResult

__all__ = ["worst_case_sharpness"]


def adaptive_scale(weights: Tensor, adaptive: bool, eta: float) -> Tensor | None:
    """``|w| + eta`` (the elementwise scale of an adaptive ball), or None when not adaptive."""
    return weights.abs() + eta if adaptive else None


def worst_case_sharpness(
    model: nn.Module,
    data: Any,
    rho: float,
    *,
    loss: str | Callable[[Tensor, Tensor], Tensor] = "crossentropy",
    norm: str = "l2",
    adaptive: bool = False,
    eta: float = 0.0,
    m: int | None = None,
    steps: int = 20,
    step_size: float | None = None,
    logit_normalise: bool = False,
    subset: int | Any | None = None,
    subset_seed: int = 0,
    seed: int = 0,
    random_start: bool = True,
    batch_size: int | None = None,
) -> SharpnessResult:
    """Worst-case (adversarial) m-sharpness of ``model`` on ``data`` in a ball of radius ``rho``.

    For each chunk of ``m`` samples (None: the whole evaluation set, n-sharpness; the last
    chunk is shorter when ``m`` does not divide the set, and chunks are weighted by their
    sizes), ``max L_chunk(w + delta) - L_chunk(w)`` over

    - ``norm="l2"``: ``||delta||_2 <= rho``; ascent ``gamma += step * g / ||g||_2`` and
      projection onto the ball;
    - ``norm="linf"``: ``|delta_i| <= rho``; ascent ``gamma += step * sign(g)`` and clipping;

    with ``delta = gamma``, or for ``adaptive=True`` ``delta = (|w| + eta) * gamma`` (Kwon et
    al.'s ``T_w``; ``eta = 0`` is Andriushchenko et al.'s definition, where a zero weight is
    never moved; ASAM trains with ``eta = 0.01``). ``steps`` ascent steps per chunk of first
    size ``step_size`` (None: ``2 * rho``; halved after every step that does not increase the
    loss), from the better of ``delta = 0`` and, when ``random_start``, a point drawn
    uniformly from the ball (``seed``; at an exact minimum the gradient is zero and only a
    random start leaves it). Every value is a lower bound of the true maximum, and ``>= 0``.

    Args:
        model: any ``nn.Module``; all parameters with ``requires_grad`` are perturbed. It runs
            in eval mode (BatchNorm running statistics, dropout off); its weights are never
            written (:func:`torch.func.functional_call`) and each module's mode is restored,
            also on an exception.
        data: ``(inputs, targets)``, a ``Dataset`` or a ``DataLoader``, read once
            (:func:`landscape.evaluate.as_tensors`); ``subset`` / ``subset_seed`` pick a fixed
            subset as for surfaces.
        rho: the radius (``>= 0``; in ``gamma`` units when adaptive).
        loss: ``"crossentropy"``, ``"mse"`` or a callable returning a batch's mean loss.
        logit_normalise: centre the logits and divide them by their L2 norm per sample before
            the loss, at ``w`` and at ``w + delta`` (Andriushchenko et al.'s variant).
        batch_size: rows per forward pass within a chunk (None: a chunk at once).

    Returns:
        a :class:`SharpnessResult` with ``measure="worst_case"``: ``value`` = ``loss_increase``
        (mean over chunks), per-chunk ``values`` with their standard error, and for
        cross-entropy the 0-1 error increase at each chunk's loss-maximising ``delta``.
    """
    rho = check_radius("rho", rho)
    norm = check_norm(norm)
    eta = check_radius("eta", eta)
    steps = check_count("steps", steps, 0)
    if step_size is not None:
        step_size = check_radius("step_size", step_size)
    problem = prepare(
        model,
        data,
        loss=loss,
        chunk=m,
        subset=subset,
        subset_seed=subset_seed,
        logit_normalise=logit_normalise,
        batch_size=batch_size,
    )
    objective = problem.objective
    mapping = Diagonal(adaptive_scale(objective.weights, adaptive, eta), objective.size)
    generator = torch.Generator().manual_seed(int(seed)) if random_start else None
    references: list[tuple[float, float | None]] = []
    perturbed: list[tuple[float, float | None]] = []
    with evaluation_mode(model):
        for chunk in problem.evalset.batches:
            origin, best = ascend(
                objective,
                chunk,
                mapping,
                norm=norm,
                radius=rho,
                steps=steps,
                step_size=step_size,
                generator=generator,
            )
            references.append((origin.loss, origin.error))
            perturbed.append((best.loss, best.error))
    sizes = [float(stop - begin) for begin, stop in problem.evalset.bounds]
    return problem.result(
        "worst_case",
        references=references,
        perturbed=perturbed,
        weights=sizes,
        rho=rho,
        norm=norm,
        adaptive=bool(adaptive),
        m=None if m is None else int(m),
        steps=steps,
        samples=None,
        seed=int(seed),
        settings={
            "step_size": 2.0 * rho if step_size is None else step_size,
            "eta": eta if adaptive else None,
            "random_start": bool(random_start),
            "chunks": len(sizes),
        },
    )
