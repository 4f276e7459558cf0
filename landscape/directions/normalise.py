"""Direction tensors as flat vectors: normalisation against the weights, inner products,
cosine and Gram-Schmidt (:mod:`landscape.directions`)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

EPS = 1e-10


def cpu32(t: Tensor) -> Tensor:
    """A float32 CPU view or copy of ``t`` (never modify the result in place)."""
    return t.detach().to(device="cpu", dtype=torch.float32)


def dot(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> float:
    """Inner product of two name -> tensor dicts as flat vectors, in float64."""
    total = 0.0
    for name, t in a.items():
        total += float(torch.dot(t.reshape(-1).double(), b[name].reshape(-1).double()))
    return total


def cosine(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> float | None:
    """Cosine of two name -> tensor dicts as flat vectors (``None`` when one is zero)."""
    na, nb = math.sqrt(dot(a, a)), math.sqrt(dot(b, b))
    if na == 0.0 or nb == 0.0:
        return None
    return dot(a, b) / (na * nb)


def gram_schmidt(x: Mapping[str, Tensor], y: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Gram–Schmidt of ``y`` against ``x`` on the flat vectors, rescaled to ``|y|``."""
    xx, xy, yy = dot(x, x), dot(x, y), dot(y, y)
    if xx == 0.0:
        raise ValueError("cannot orthogonalize against a zero x direction")
    coef = xy / xx
    residual = {n: y[n].double() - coef * x[n].double() for n in y}
    rr = sum(float((r * r).sum()) for r in residual.values())
    if rr <= 1e-24 * max(yy, 1e-300):
        raise ValueError("cannot orthogonalize: y is parallel to x (same_dir?)")
    scale = math.sqrt(yy / rr)
    return {n: (r * scale).to(torch.float32) for n, r in residual.items()}


def normalize_(d: Tensor, w: Tensor, norm: str) -> None:
    """Normalise one direction tensor ``d`` (ndim >= 2) against weights ``w`` in place."""
    if norm == "filter":
        rows_d = d.reshape(d.shape[0], -1)
        rows_w = w.reshape(w.shape[0], -1)
        scale = rows_w.norm(dim=1) / (rows_d.norm(dim=1) + EPS)
        rows_d.mul_(scale.unsqueeze(1))
    elif norm == "layer":
        d.mul_(w.norm() / (d.norm() + EPS))
    elif norm == "weight":
        d.mul_(w)
    elif norm == "dfilter":
        rows_d = d.reshape(d.shape[0], -1)
        rows_d.div_(rows_d.norm(dim=1, keepdim=True) + EPS)
    elif norm == "dlayer":
        d.div_(d.norm() + EPS)
    # "none": unchanged
