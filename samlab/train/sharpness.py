"""Sharpness of a trained model: the top Hessian eigenvalue by power iteration.

``hessian_top_eigenvalue`` runs power iteration on Hessian-vector products (double backward)
of the *mean* loss over a fixed set of batches, and reports the Rayleigh quotient
``v^T H v`` with ``||v|| = 1``: the textbook estimate, not the official SAMformer code's
``|g^T H v|`` on a per-sample loss vector (notes/samformer.md §7.2). Power iteration converges
to the eigenvalue of largest magnitude; where that one is negative (an early-stopped model need
not sit at a minimum), a second power iteration on ``H - mu I`` with ``mu`` that negative
eigenvalue finds the top (algebraically largest) one, which is what is reported.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

__all__ = ["HessianEigen", "hessian_top_eigenvalue", "run_top_eigenvalue"]

#: how ``run_top_eigenvalue`` measured a stored value (older values are measured again)
_METHOD = "power iteration, shifted when the dominant eigenvalue is negative"


@dataclass
class HessianEigen:
    """Result of :func:`hessian_top_eigenvalue`."""

    eigenvalue: float
    iterations: int
    converged: bool
    relative_change: float
    history: list[float] = field(default_factory=list)


def _hvp(
    model: nn.Module,
    params: Sequence[Tensor],
    batches: Sequence[tuple[Tensor, Tensor]],
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    vector: Sequence[Tensor],
) -> list[Tensor]:
    """H v of the sample-weighted mean loss over ``batches``."""
    total = sum(len(x) for x, _ in batches)
    out = [torch.zeros_like(p) for p in params]
    for x, y in batches:
        loss = loss_fn(model(x), y) * (len(x) / total)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        dot = sum((g * v).sum() for g, v in zip(grads, vector, strict=True))
        hv = torch.autograd.grad(dot, params)
        for acc, h in zip(out, hv, strict=True):
            acc.add_(h.detach())
    return out


def _normalise(vector: list[Tensor]) -> list[Tensor]:
    norm = math.sqrt(sum(float((v * v).sum()) for v in vector))
    if norm == 0.0:
        return vector
    return [v / norm for v in vector]


def hessian_top_eigenvalue(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    loss_fn: Callable[[Tensor, Tensor], Tensor] = nn.functional.mse_loss,
    *,
    iters: int = 50,
    tol: float = 1e-4,
    seed: int = 0,
) -> HessianEigen:
    """Top Hessian eigenvalue of ``loss_fn`` (mean over all samples of ``batches``).

    ``batches`` is materialised once (a fixed evaluation set); the model is put in eval mode
    (dropout off, BatchNorm frozen) and restored afterwards. Iteration stops when the relative
    change of the estimate falls below ``tol`` or after ``iters`` products. The start vector
    is Gaussian from a CPU generator seeded with ``seed``.
    """
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    batches = list(batches)
    if not batches:
        raise ValueError("hessian_top_eigenvalue needs at least one batch of data")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    gen = torch.Generator().manual_seed(seed)
    vector = _normalise(
        [torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device) for p in params]
    )
    was_training = model.training
    model.eval()
    try:
        # Fused attention kernels have no double backward; the math kernel does.
        with sdpa_kernel(SDPBackend.MATH):
            history, change = _power_iteration(model, params, batches, loss_fn, vector, iters, tol)
            if history[-1] < 0:  # the dominant eigenvalue is negative: shift it away
                shift = history[-1]
                shifted, change = _power_iteration(
                    model, params, batches, loss_fn, vector, iters, tol, shift=shift
                )
                history += [value + shift for value in shifted]
    finally:
        model.train(was_training)
    return HessianEigen(
        eigenvalue=history[-1],
        iterations=len(history),
        converged=change < tol,
        relative_change=change,
        history=history,
    )


def _power_iteration(model, params, batches, loss_fn, vector, iters, tol, shift: float = 0.0):
    """Power iteration on ``H - shift * I``; the estimates are of its eigenvalue."""
    history: list[float] = []
    change = math.inf
    for _ in range(iters):
        hv = _hvp(model, params, batches, loss_fn, vector)
        if shift:
            hv = [h - shift * v for h, v in zip(hv, vector, strict=True)]
        estimate = sum(float((h * v).sum()) for h, v in zip(hv, vector, strict=True))
        if history:
            change = abs(estimate - history[-1]) / max(abs(estimate), 1e-30)
        history.append(estimate)
        vector = _normalise(hv)
        if change < tol:
            break
    return history, change


def run_top_eigenvalue(run_dir, *, windows: int = 1024, iters: int = 30, data=None) -> float:
    """λ_max of a finished :func:`samlab.train.forecast.train_forecaster` run: its best
    checkpoint (``run_dir/best.pt``, config included) on the first ``windows`` training windows.

    Stored in ``run_dir/result.json`` as ``lambda_max`` (with ``lambda_max_windows``) and read
    back from there on later calls, so each run is measured once. ``data``: the run's
    :class:`~samlab.datasets.timeseries.ForecastData` if already loaded.
    """
    import json
    from pathlib import Path

    from samlab.datasets.timeseries import load_forecast_data
    from samlab.train.checkpoint import load_checkpoint
    from samlab.train.forecast import ForecastConfig, build_forecaster, forecast_batches

    run_dir = Path(run_dir)
    result_path = run_dir / "result.json"
    if not result_path.is_file():
        raise FileNotFoundError(f"{result_path} is missing: the run has not finished")
    result = json.loads(result_path.read_text())
    if (
        "lambda_max" in result
        and result.get("lambda_max_windows") == windows
        and result.get("lambda_max_method") == _METHOD
    ):
        return float(result["lambda_max"])
    fields = set(ForecastConfig.__dataclass_fields__)
    config = ForecastConfig(**{k: v for k, v in result["config"].items() if k in fields})
    if data is None:
        data = load_forecast_data(config.dataset, config.horizon, seq_len=config.seq_len,
                                  data_dir=config.data_dir, path=config.data_path)  # fmt: skip
    model = build_forecaster(config, data.n_channels)
    model.load_state_dict(load_checkpoint(run_dir / "best.pt")["model"])
    batches = forecast_batches(data.train, windows)
    eig = hessian_top_eigenvalue(model, batches, iters=iters, tol=1e-3)
    result.update(lambda_max=eig.eigenvalue, lambda_max_windows=windows, lambda_max_method=_METHOD)
    result_path.write_text(json.dumps(result, indent=2) + "\n")
    return eig.eigenvalue
