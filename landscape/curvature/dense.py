"""An explicit symmetric matrix behind the curvature operator protocol.

:class:`DenseOperator` wraps a square, symmetric ``(n, n)`` tensor and answers ``matvec`` /
``matmat`` with ordinary matrix products, counting them as the Hessian operator counts its
Hessian-vector products (a ``matmat`` of ``k`` columns counts ``k``). The algorithms in
:mod:`landscape.curvature.eigen`, :mod:`~landscape.curvature.trace` and
:mod:`~landscape.curvature.density` see nothing but the protocol (``size``, ``dtype``,
``device``, ``hvp_count``, ``matvec``, ``matmat``, ``provenance``), so this class is both the
exact oracle of their tests (``torch.linalg.eigvalsh`` knows the answer) and a way to run them on
any small matrix one can write down (a Gauss-Newton matrix, a covariance, ...).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["DenseOperator"]


class DenseOperator:
    """A symmetric matrix as a linear operator.

    Args:
        matrix: a real floating ``(n, n)`` tensor, symmetric up to rounding: the check is
            ``max |A - A^T| <= 100 * eps(dtype) * max(1, max |A|)``. The tensor is kept as given
            (not copied); vectors passed to :meth:`matvec` must share its dtype and device.

    Raises:
        ValueError: if ``matrix`` is not a square, non-empty, real floating, symmetric matrix.
    """

    def __init__(self, matrix: Tensor) -> None:
        if not isinstance(matrix, Tensor):
            raise ValueError(f"matrix must be a torch.Tensor, got {type(matrix).__name__}")
        if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
            raise ValueError(
                f"matrix must be square and non-empty, got shape {tuple(matrix.shape)}"
            )
        if not matrix.is_floating_point():
            raise ValueError(f"matrix must be real floating point, got {matrix.dtype}")
        scale = max(1.0, float(matrix.abs().max()))
        asymmetry = float((matrix - matrix.T).abs().max())
        allowed = 100 * torch.finfo(matrix.dtype).eps * scale
        if not asymmetry <= allowed:  # also catches NaN
            raise ValueError(
                f"matrix must be symmetric: max |A - A^T| = {asymmetry:.3g} > {allowed:.3g}"
            )
        self._matrix = matrix
        self.size: int = matrix.shape[0]
        self.dtype: torch.dtype = matrix.dtype
        self.device: torch.device = matrix.device
        self.hvp_count: int = 0

    def matvec(self, v: Tensor) -> Tensor:
        """``A @ v`` for a 1-D tensor of length ``size`` (counts one product)."""
        if v.dim() != 1 or v.shape[0] != self.size:
            raise ValueError(f"matvec takes a vector of length {self.size}, got {tuple(v.shape)}")
        self.hvp_count += 1
        return self._matrix @ v

    def matmat(self, V: Tensor) -> Tensor:
        """``A @ V`` for an ``(n, k)`` tensor (counts ``k`` products)."""
        if V.dim() != 2 or V.shape[0] != self.size:
            raise ValueError(f"matmat takes an ({self.size}, k) tensor, got {tuple(V.shape)}")
        self.hvp_count += V.shape[1]
        return self._matrix @ V

    def provenance(self) -> dict:
        """JSON-able facts about the operator."""
        return {"operator": "dense", "size": self.size}

    def __repr__(self) -> str:
        return f"DenseOperator(size={self.size}, dtype={self.dtype}, device={self.device})"
