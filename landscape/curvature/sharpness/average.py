"""Average-case sharpness: the expected loss increase under random weight noise.

Following Andriushchenko et al., "A modern look at the relationship between sharpness and
generalization" (ICML 2023):

    S_avg = E_delta [L_S(w + delta) - L_S(w)]

on the fixed evaluation set ``S``, estimated by Monte Carlo over ``samples`` independent draws
of ``delta`` with its standard error. The expectation is linear in the samples of ``S``, so
unlike the worst case it does not depend on a chunk size ``m``: every draw is evaluated on the
whole set.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from landscape.curvature.sharpness.objective import (
    check_count,
    check_norm,
    check_radius,
    evaluation_mode,
    prepare,
)
from landscape.curvature.sharpness.results import SharpnessResult

__all__ = ["average_sharpness", "noise_scale"]


def noise_scale(
    weights: Tensor, rho: float, *, norm: str, adaptive: bool, eta: float = 0.0
) -> Tensor | float:
    """The per-coordinate scale ``s`` of the noise ``delta = s * z`` (see
    :func:`average_sharpness`): ``rho / sqrt(n)`` (L2) or ``rho`` (L-inf), or ``rho * (|w| +
    eta)`` elementwise when ``adaptive``."""
    if adaptive:
        return rho * (weights.abs() + eta)
    return rho / math.sqrt(weights.numel()) if norm == "l2" else rho


def average_sharpness(
    model: nn.Module,
    data: Any,
    rho: float,
    *,
    loss: str | Callable[[Tensor, Tensor], Tensor] = "crossentropy",
    samples: int = 100,
    norm: str = "l2",
    adaptive: bool = False,
    eta: float = 0.0,
    logit_normalise: bool = False,
    antithetic: bool = False,
    subset: int | Any | None = None,
    subset_seed: int = 0,
    seed: int = 0,
    batch_size: int | None = None,
) -> SharpnessResult:
    """Average-case sharpness ``E_delta[L(w + delta)] - L(w)`` of ``model`` on ``data``.

    The noise ``delta = s * z`` over the ``n`` trainable parameter entries, ``z`` drawn on
    the CPU from a generator seeded with ``seed``:

    - ``norm="l2"``: ``z ~ N(0, I)``, so ``delta ~ N(0, sigma^2 I)`` with
      ``sigma = rho / sqrt(n)`` (``E ||delta||_2^2 = rho^2``: ``rho`` is on the scale of the
      worst-case L2 radius); adaptive: ``delta ~ N(0, rho^2 diag((|w| + eta)^2))``, i.e.
      ``sigma_i = rho * (|w_i| + eta)``, each weight moved by a relative noise of size ``rho``
      (Andriushchenko et al.'s definition with ``eta = 0``);
    - ``norm="linf"``: ``z`` uniform in ``[-1, 1]^n``, so ``delta`` is uniform in the L-inf
      ball of radius ``rho`` (adaptive: the box ``|delta_i| <= rho (|w_i| + eta)``), with
      variance ``s_i^2 / 3`` per coordinate.

    .. note::
       Andriushchenko et al.'s code draws the non-adaptive Gaussian with ``sigma = rho`` per
       coordinate; their ``rho`` is ``rho / sqrt(n)`` here. The adaptive and L-inf noise are
       theirs.

    For a quadratic ``L(w) = (w - w*)^T A (w - w*) / 2`` the value is
    ``sum_i A_ii Var(delta_i) / 2`` (``sigma^2 tr(A) / 2`` for the isotropic Gaussian) at any
    ``w``. ``antithetic=True`` evaluates every draw at ``+delta`` and ``-delta`` and averages
    the two (the same expectation, the odd terms of the loss cancel within a pair; two passes
    per draw). The standard error is over draws (``std(ddof=1) / sqrt(samples)``).

    The model runs in eval mode, its weights are never written and each module's mode is
    restored (as :func:`~landscape.curvature.sharpness.worst_case_sharpness`, whose ``loss``,
    ``logit_normalise``, ``subset``, ``subset_seed`` and ``batch_size`` this shares). Returns a
    :class:`SharpnessResult` with ``measure="average"``, one entry of ``values`` per draw, and
    the 0-1 error increase for cross-entropy; ``settings["sigma"]`` is the Gaussian's scalar
    ``sigma`` (non-adaptive L2), else None.
    """
    rho = check_radius("rho", rho)
    norm = check_norm(norm)
    eta = check_radius("eta", eta)
    samples = check_count("samples", samples, 1)
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
    inputs, targets = problem.evalset.inputs, problem.evalset.targets
    scale = noise_scale(objective.weights, rho, norm=norm, adaptive=adaptive, eta=eta)
    generator = torch.Generator().manual_seed(int(seed))
    draws: list[tuple[float, float | None]] = []
    with evaluation_mode(model):
        loss_w, error_w, _ = objective.evaluate(inputs, targets, None, False)
        for _ in range(samples):
            if norm == "l2":
                z = torch.randn(objective.size, generator=generator, dtype=objective.dtype)
            else:
                z = 2.0 * torch.rand(objective.size, generator=generator, dtype=objective.dtype)
                z -= 1.0
            delta = z.to(objective.device) * scale
            signs = (1.0, -1.0) if antithetic else (1.0,)
            results = [objective.evaluate(inputs, targets, sign * delta, False) for sign in signs]
            mean_loss = sum(r[0] for r in results) / len(results)
            errors = [r[1] for r in results]
            mean_error = None if errors[0] is None else sum(errors) / len(errors)
            draws.append((mean_loss, mean_error))
    return problem.result(
        "average",
        references=[(loss_w, error_w)] * samples,
        perturbed=draws,
        weights=[1.0] * samples,
        rho=rho,
        norm=norm,
        adaptive=bool(adaptive),
        m=None,
        steps=None,
        samples=samples,
        seed=int(seed),
        settings={
            "sigma": scale if isinstance(scale, float) and norm == "l2" else None,
            "distribution": "gaussian" if norm == "l2" else "uniform",
            "eta": eta if adaptive else None,
            "antithetic": bool(antithetic),
        },
    )
