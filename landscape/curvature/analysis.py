"""Hessian curvature of a model's loss in one call: eigenvalues, trace, density, per layer.

Each function takes a model and its data with the surfaces' evaluation protocol (a fixed
``subset`` drawn with ``subset_seed``, eval mode, a loss name or callable), builds one
:class:`~landscape.curvature.operator.HessianOperator` over the selected ``params`` (``mode``,
``ggn``, ``batch_size`` as there) and runs one algorithm of :mod:`~landscape.curvature.eigen`,
:mod:`~landscape.curvature.trace` or :mod:`~landscape.curvature.density` on it, returning its
frozen result (provenance: the operator's facts plus the algorithm's settings and ``seed``)::

    top = hessian_eigenvalues(model, (inputs, targets), k=5, subset=512)
    top.eigenvalues[0], eigenvalue_ratio(top)            # lambda_max, lambda_max / lambda_5
    hessian_trace(model, loader, products=99).trace      # Hutch++

To run several algorithms on the same operator (one mode probe, one kept graph), build the
operator yourself with :func:`hessian_operator` and call the algorithms on it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from torch import Tensor, nn

from landscape.curvature.density import DENSITY_OPTIONS, spectral_density
from landscape.curvature.eigen import smallest_eigenvalue, top_eigenvalues
from landscape.curvature.operator import HessianOperator
from landscape.curvature.results import DensityResult, EigenResult, TraceResult
from landscape.curvature.trace import trace as trace_estimate

__all__ = [
    "check_k",
    "eigenvalue_ratio",
    "hessian_density",
    "hessian_eigenvalues",
    "hessian_operator",
    "hessian_smallest_eigenvalue",
    "hessian_trace",
    "layer_eigenvalues",
]

Loss = str | Callable[[Tensor, Tensor], Tensor]
Params = Sequence[str] | Callable[[str, Tensor], bool] | None


def hessian_operator(
    model: nn.Module,
    data: Any,
    *,
    loss: Loss = "crossentropy",
    params: Params = None,
    mode: str = "auto",
    ggn: bool = False,
    subset: int | Sequence[int] | np.ndarray | None = None,
    subset_seed: int = 0,
    batch_size: int | None = None,
    **options: Any,
) -> HessianOperator:
    """The :class:`HessianOperator` of ``model``'s mean ``loss`` over ``data``.

    ``data``: an ``(inputs, targets)`` pair, a sequence or ``DataLoader`` of such batches;
    ``subset`` (an int: that many seeded random samples; or indices) restricts it, as for
    surfaces. ``options`` go to the operator (``reducer``, ``shard``, ``keep_graph_batches``).
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return HessianOperator(
        model,
        data,
        loss,
        params=params,
        mode=mode,
        ggn=ggn,
        subset=subset,
        subset_seed=subset_seed,
        batch_size=batch_size,
        **options,
    )


def check_k(op: Any, k: int, flag: str = "k") -> None:
    """``ValueError`` naming the fix when ``k`` eigenvalues cannot be asked of ``op``."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"{flag} must be a positive integer, got {k!r}")
    if k > op.size:
        raise ValueError(
            f"{flag} = {k} eigenvalues asked, but the selected parameters have only {op.size} "
            f"entries: lower {flag} to at most {op.size} or select more parameters"
        )


def hessian_eigenvalues(model: nn.Module, data: Any, k: int = 1, **options: Any) -> EigenResult:
    """The ``k`` algebraically largest Hessian eigenvalues, largest first.

    ``options``: the keywords of :func:`~landscape.curvature.eigen.top_eigenvalues`
    (``method="lanczos"`` or ``"power"``, ``tol=1e-4``: each converged eigenvalue has relative
    Ritz residual ``<= tol``, ``max_iter``, ``seed``, ``return_vectors``) and the options of
    :func:`hessian_operator` (``loss``, ``params``, ``mode``, ``ggn``, ``subset``, ...).
    """
    eigen = taken(options, keyword_names(top_eigenvalues))
    op = hessian_operator(model, data, **options)
    check_k(op, k)
    return top_eigenvalues(op, k, **eigen)


def hessian_smallest_eigenvalue(
    model: nn.Module,
    data: Any,
    *,
    tol: float = 1e-4,
    max_iter: int | None = None,
    seed: int = 0,
    return_vectors: bool = False,
    start: str | Tensor = "random",
    **operator: Any,
) -> EigenResult:
    """The algebraically smallest Hessian eigenvalue (most negative away from a minimum), by
    Lanczos (:func:`~landscape.curvature.eigen.smallest_eigenvalue`, whose ``start`` this
    passes on)."""
    op = hessian_operator(model, data, **operator)
    return smallest_eigenvalue(
        op, tol=tol, max_iter=max_iter, seed=seed, return_vectors=return_vectors, start=start
    )


def hessian_trace(
    model: nn.Module,
    data: Any,
    *,
    method: str = "hutch++",
    products: int = 99,
    tol: float | None = None,
    seed: int = 0,
    distribution: str | None = None,
    **operator: Any,
) -> TraceResult:
    """``tr(H)`` by Hutch++ (default), Hutchinson or XTrace from ``products`` Hessian-vector
    products, with a standard error (:func:`landscape.curvature.trace.trace`)."""
    op = hessian_operator(model, data, **operator)
    return trace_estimate(op, method, products, tol=tol, seed=seed, distribution=distribution)


def hessian_density(model: nn.Module, data: Any, **options: Any) -> DensityResult:
    """The smoothed Hessian eigenvalue density by stochastic Lanczos quadrature
    (:func:`~landscape.curvature.density.spectral_density`; ``probes * steps`` products).

    ``options``: the keywords of :func:`~landscape.curvature.density.spectral_density`
    (``probes=4``, ``steps=64``, ``sigma``, ``grid``, ``grid_points``, ``seed``) and of
    :func:`hessian_operator`."""
    density = taken(options, DENSITY_OPTIONS)
    op = hessian_operator(model, data, **options)
    return spectral_density(op, **density)


def layer_eigenvalues(
    model: nn.Module | HessianOperator,
    data: Any = None,
    *,
    by: str = "module",
    k: int = 1,
    method: str = "lanczos",
    tol: float = 1e-4,
    max_iter: int | None = None,
    seed: int = 0,
    **operator: Any,
) -> dict[str, EigenResult]:
    """Top eigenvalues of each diagonal block of the Hessian: per module (its own parameters)
    or per parameter tensor (``by="parameter"``), in model order.

    Each block is the principal submatrix ``H[b, b]`` (the operator restricted to the block's
    parameters, :meth:`HessianOperator.restricted`), not the curvature of the whole model along
    the block. ``model`` may be a :class:`HessianOperator` already built (``data`` is then
    unused). ``k`` is capped at each block's size. The model's own parameters (outside any
    submodule) form the block ``""``.
    """
    if isinstance(model, HessianOperator):
        if data is not None or operator:
            raise ValueError("layer_eigenvalues of an operator takes no data or operator options")
        op = model
    else:
        op = hessian_operator(model, data, **operator)
    check_k(op, k)
    found: dict[str, EigenResult] = {}
    for name, _ in op.blocks(by):
        block = op.restricted([name] if by == "module" else name)
        found[name] = top_eigenvalues(
            block, min(k, block.size), method=method, tol=tol, max_iter=max_iter, seed=seed
        )
    return found


def taken(options: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """The entries of ``options`` named in ``names``, removed from ``options`` (what is left
    goes to :func:`hessian_operator`)."""
    return {name: options.pop(name) for name in names if name in options}


def keyword_names(function: Callable[..., Any]) -> tuple[str, ...]:
    """The names of ``function``'s keyword-only parameters."""
    parameters = inspect.signature(function).parameters.values()
    return tuple(p.name for p in parameters if p.kind is p.KEYWORD_ONLY)


def eigenvalue_ratio(result: EigenResult, k: int | None = None) -> float:
    """``lambda_1 / lambda_k`` of a top-k result (``k``: default the last eigenvalue found;
    the SAM literature reports ``lambda_max / lambda_5``). NaN when ``lambda_k`` is 0."""
    values = result.eigenvalues
    k = len(values) if k is None else k
    if not 1 <= k <= len(values):
        raise ValueError(f"k must be in 1..{len(values)} (the eigenvalues found), got {k}")
    return values[0] / values[k - 1] if values[k - 1] != 0 else float("nan")
