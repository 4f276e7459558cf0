"""Hessian eigenvectors as surface directions: :func:`eigenvector_directions`.

An eigenvector of :class:`~landscape.curvature.operator.HessianOperator` is a flat vector over
the operator's selected parameters. As a :class:`~landscape.directions.Directions` it becomes
one tensor per parameter *name* of the model (``dir_type="weights"``: every
``named_parameters()`` entry), zero for the parameters the operator did not select, the whole
direction of unit Euclidean norm. The meta says ``xnorm = ynorm = "none"``: the file is drawn
as stored, so ``python -m landscape surface --dir_file FILE`` (which uses a given direction
file as it is) gives the loss along the eigenvector itself, ``L(theta + a v)``, whose second
derivative at ``a = 0`` is the eigenvalue. The sign of each vector is fixed so that its entry
of largest magnitude is positive (an eigenvector's sign is arbitrary).

Typical use: x along the top eigenvector, y along the most negative one::

    top = top_eigenvalues(op, 1, return_vectors=True)
    bottom = smallest_eigenvalue(op, return_vectors=True)
    save_directions("hessian_dirs.h5", eigenvector_directions(op, top, bottom=bottom))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from landscape.curvature.results import EigenResult
from landscape.directions import Directions

__all__ = ["eigenvector_directions"]


def _columns(result: EigenResult, which: str | int | Sequence[int], what: str) -> list[int]:
    if result.vectors is None:
        raise ValueError(f"{what} has no eigenvectors: compute it with return_vectors=True")
    if which in ("top", "bottom"):
        columns = [0]
    elif isinstance(which, int) and not isinstance(which, bool):
        columns = [which]
    elif isinstance(which, str):
        raise ValueError(f"which must be 'top', 'bottom', an int or a tuple of ints: {which!r}")
    else:
        columns = [int(c) for c in which]
    count = result.vectors.shape[1]
    if not 1 <= len(columns) <= 2 or any(not 0 <= c < count for c in columns):
        raise ValueError(
            f"which must pick 1 or 2 of the {count} eigenvectors (indices 0..{count - 1}), "
            f"got {which!r}"
        )
    return columns


def _oriented(vector: Tensor) -> Tensor:
    vector = vector.detach().to(device="cpu", dtype=torch.float64)
    vector = vector / vector.norm()
    return -vector if float(vector[int(vector.abs().argmax())]) < 0 else vector


def _by_name(op: Any, vector: Tensor) -> dict[str, Tensor]:
    pieces = op.unflatten(vector.to(device=op.device, dtype=op.dtype))
    out = {}
    for name, parameter in op.model.named_parameters():
        if name in pieces:
            out[name] = pieces[name].detach().to(device="cpu", dtype=torch.float32).clone()
        else:
            out[name] = torch.zeros(parameter.shape, dtype=torch.float32)
    return out


def eigenvector_directions(
    op: Any,
    result: EigenResult,
    which: str | int | Sequence[int] = "top",
    *,
    bottom: EigenResult | None = None,
) -> Directions:
    """Eigenvectors of ``result`` (computed on ``op`` with ``return_vectors=True``) as
    directions by parameter name, unit norm, ``normalisation="none"``.

    Args:
        op: the :class:`~landscape.curvature.operator.HessianOperator` the vectors belong to
            (its ``model``, ``names`` and :meth:`unflatten` place them).
        result: an :class:`EigenResult` with ``vectors``.
        which: ``"top"`` (or ``"bottom"`` for a :func:`smallest_eigenvalue` result): its first
            vector; an int or a tuple of one or two column indices: those vectors as x (and y).
        bottom: a :func:`smallest_eigenvalue` result with vectors: its vector becomes y (the
            most negative curvature), with x the single vector ``which`` picks of ``result``.

    Returns:
        :class:`Directions` (1D, or 2D with ``bottom`` or two indices) whose ``meta`` records
        ``kind="hessian"``, the eigenvalues, ``xnorm=ynorm="none"``, ``normalisation="none"``
        and the operator's ``model_sha256`` / ``data_sha256``.
    """
    columns = _columns(result, which, "result")
    vectors = [result.vectors[:, c] for c in columns]
    values = [result.eigenvalues[c] for c in columns]
    if bottom is not None:
        if len(columns) != 1:
            raise ValueError("with bottom=, which must pick one eigenvector of result (x)")
        _columns(bottom, "bottom", "bottom")
        vectors.append(bottom.vectors[:, 0])
        values.append(bottom.eigenvalues[0])
    for vector in vectors:
        if vector.shape[0] != op.size:
            raise ValueError(
                f"the eigenvectors have {vector.shape[0]} entries, the operator {op.size}: "
                "pass the operator they were computed on"
            )
    oriented = [_oriented(v) for v in vectors]
    facts = op.provenance()
    meta = {
        "kind": "hessian",
        "source": "landscape.curvature",
        "eigenvalues": [float(v) for v in values],
        "seed": int(result.seed),
        "xnorm": "none",
        "ynorm": "none" if len(oriented) == 2 else None,
        "xignore": "none",
        "yignore": "none" if len(oriented) == 2 else None,
        "normalisation": "none",
        "same_dir": False,
        "orthogonalized": False,
        "cosine": float(oriented[0] @ oriented[1]) if len(oriented) == 2 else None,
        "matrix": facts.get("matrix"),
        "param_names": list(op.names),
        "model_sha256": facts.get("model_sha256"),
        "data_sha256": facts.get("data_sha256"),
    }
    x = _by_name(op, oriented[0])
    y = _by_name(op, oriented[1]) if len(oriented) == 2 else None
    return Directions(x=x, y=y, dir_type="weights", meta=meta)
