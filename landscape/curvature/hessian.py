"""The 0.2 API over the curvature engine: :func:`hessian_top_eigenvalue` and
:func:`hessian_vector_product`.

Both run on :class:`~landscape.curvature.operator.HessianOperator` (the one Hessian-vector
product engine) and :func:`~landscape.curvature.eigen.top_eigenvalues` (the one top-eigenvalue
implementation): the Hessian of the sample-weighted *mean* loss over a fixed set of batches,
with the model in eval mode (BatchNorm on running statistics, dropout off; each module's mode
restored). The top eigenvalue is the algebraically largest, by Lanczos with full
reorthogonalisation, stopped when its relative Ritz residual ``||H v - theta v|| / |theta|``
reaches ``tol``: the textbook Rayleigh-quotient estimate, not the official SAMformer code's
``|g^T H v|`` on a per-sample loss vector.

.. note:: Until 0.2 this was power iteration (shifted where the dominant eigenvalue was
   negative) stopped on the relative change of the estimate; ``HessianEigen`` keeps its fields
   with ``iterations`` = products used, ``relative_change`` = the final relative residual and
   ``history`` = the top Ritz value after each product.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from torch import Tensor, nn

from landscape.curvature.eigen import top_eigenvalues
from landscape.curvature.operator import HessianOperator

__all__ = ["HessianEigen", "hessian_top_eigenvalue", "hessian_vector_product"]


@dataclass
class HessianEigen:
    """Result of :func:`hessian_top_eigenvalue`.

    Attributes:
        eigenvalue: the top (algebraically largest) eigenvalue.
        iterations: Hessian-vector products used (Lanczos steps).
        converged: whether the relative Ritz residual reached ``tol``.
        relative_change: that final relative residual (an upper bound of the relative error).
        history: the top Ritz value after each step.
    """

    eigenvalue: float
    iterations: int
    converged: bool
    relative_change: float
    history: list[float] = field(default_factory=list)


def _parameter_names(model: nn.Module, params: Sequence[Tensor]) -> list[str]:
    named = list(model.named_parameters())
    names = []
    for tensor in params:
        match = next((name for name, p in named if p is tensor), None)
        if match is None:
            raise ValueError(
                "hessian_vector_product: params must be parameters of model "
                "(tensors from model.parameters())"
            )
        names.append(match)
    return names


def hessian_vector_product(
    model: nn.Module,
    params: Sequence[Tensor],
    batches: Sequence[tuple[Tensor, Tensor]],
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    vector: Sequence[Tensor],
) -> list[Tensor]:
    """``H v`` of the sample-weighted mean of ``loss_fn`` over ``batches`` (double backward,
    eval mode; ``params`` are parameters of ``model``, ``vector`` is shaped like them and the
    result too, in the order of ``params``)."""
    params, vector = list(params), list(vector)
    if len(vector) != len(params):
        raise ValueError(f"vector has {len(vector)} tensors, params {len(params)}")
    names = _parameter_names(model, params)
    op = HessianOperator(model, list(batches), loss_fn, params=names, mode="reverse")
    pieces = dict(zip(names, vector, strict=True))
    product = op.unflatten(op.matvec(op.flatten(pieces)))
    return [product[name].detach().clone() for name in names]


def hessian_top_eigenvalue(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    loss_fn: Callable[[Tensor, Tensor], Tensor] = nn.functional.mse_loss,
    *,
    iters: int = 50,
    tol: float = 1e-4,
    seed: int = 0,
    mode: str = "reverse",
) -> HessianEigen:
    """Top Hessian eigenvalue of ``loss_fn`` (mean over all samples of ``batches``).

    ``batches`` is materialised once (a fixed evaluation set); the products run in eval mode
    and every module's mode is restored. Lanczos stops when the relative Ritz residual of the
    top eigenvalue is at most ``tol``, or after ``iters`` products (the estimate is then the
    best so far, ``converged=False``). The start vector is Gaussian from a CPU generator
    seeded with ``seed``. ``mode``: the product engine (``"reverse"``: double backward, as
    before 0.3; ``"auto"`` times both on the first batch).
    """
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    batches = list(batches)
    if not batches:
        raise ValueError("hessian_top_eigenvalue needs at least one batch of data")
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("the model has no trainable parameters")
    op = HessianOperator(model, batches, loss_fn, mode=mode)
    result = top_eigenvalues(op, 1, method="lanczos", tol=tol, max_iter=iters, seed=seed)
    return HessianEigen(
        eigenvalue=result.eigenvalues[0],
        iterations=result.hvp_count,
        converged=result.converged,
        relative_change=result.residuals[0],
        history=[float(step[0]) for step in result.history],
    )
