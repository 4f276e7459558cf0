"""Sharpness of a trained classifier: λ_max and the trace of its training-loss Hessian.

:func:`final_sharpness` measures both on the first ``samples`` training samples (in eval mode,
through :mod:`landscape.curvature`: Lanczos for λ_max, Hutch++ for the trace), for
``--sharpness`` of the command line.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from landscape.curvature import hessian_top_eigenvalue, hessian_trace

__all__ = ["final_sharpness", "first_samples"]


def first_samples(data: Any, samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``samples`` (inputs, targets) of a tensor pair or a Dataset."""
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return data[0][:samples], data[1][:samples]
    subset = torch.utils.data.Subset(data, range(min(samples, len(data))))
    return next(iter(DataLoader(subset, batch_size=len(subset))))


def final_sharpness(
    model: nn.Module,
    data: Any,
    *,
    samples: int = 512,
    iters: int = 20,
    products: int = 30,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """``{"lambda_max", "hessian_trace", "trace_stderr", "sharpness_samples"}`` of ``model``
    (cross-entropy, mean over the first ``samples`` training samples)."""
    x, y = first_samples(data, samples)
    x, y = x.to(device), y.to(device)
    top = hessian_top_eigenvalue(
        model, [(x, y)], nn.functional.cross_entropy, iters=iters, tol=1e-3
    )
    trace = hessian_trace(model, (x, y), loss="crossentropy", products=products)
    return {
        "lambda_max": float(top.eigenvalue),
        "lambda_max_converged": bool(top.converged),
        "hessian_trace": float(trace.trace),
        "trace_stderr": float(trace.stderr),
        "sharpness_samples": len(y),
    }
