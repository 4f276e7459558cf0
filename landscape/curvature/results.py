"""Frozen results of the curvature algorithms: eigenvalues, traces and spectral densities.

Each result is a value (compute, store and plot are separate steps joined by these classes):
it carries the estimate, what it cost (``hvp_count``: products this call used, ``seconds``),
how it got there (``history``) and ``provenance`` (the operator's facts plus the algorithm's
settings and seed). ``to_dict()`` gives a JSON-able dict (eigenvectors are left out: they are
tensors the size of the model). Arrays are copied and made read-only and ``provenance`` is a
:class:`ReadOnlyDict`, so a result cannot be changed after the fact (eigenvectors excepted).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from torch import Tensor

__all__ = [
    "DensityResult",
    "EigenResult",
    "ReadOnlyDict",
    "TraceResult",
    "freeze_field",
    "result_dict",
    "trapezoid",
]


def _json_float(value: float) -> float | None:
    """A float for JSON: NaN and infinities become ``None``."""
    value = float(value)
    return value if math.isfinite(value) else None


def _json_value(value: Any) -> Any:
    """``value`` for JSON: numbers as Python numbers (non-finite floats as ``None``), arrays
    and tuples as (nested) lists, dicts deep-copied."""
    if isinstance(value, dict):
        return copy.deepcopy(dict(value))
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return _json_float(value)
    if isinstance(value, (tuple, list, np.ndarray)):
        return [_json_value(v) for v in value]
    return value


def result_dict(result: Any, skip: tuple[str, ...] = ()) -> dict:
    """The fields of the result dataclass ``result`` but ``skip``, in order, as JSON values."""
    return {
        f.name: _json_value(getattr(result, f.name)) for f in fields(result) if f.name not in skip
    }


class ReadOnlyDict(dict):
    """A dict that refuses changes: the ``provenance`` (and ``settings``) of a frozen result.

    Reads, ``==``, JSON and pickling (results cross MPI ranks) work as for a dict; ``dict(d)``
    is a changeable copy."""

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(
            "a frozen result's provenance cannot be changed; take a copy with dict(...)"
        )

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self) -> tuple:
        return (type(self), (dict(self),))

    def __copy__(self) -> ReadOnlyDict:
        return self

    def __deepcopy__(self, memo: dict) -> ReadOnlyDict:
        return type(self)(copy.deepcopy(dict(self), memo))


def freeze_field(result: Any, name: str) -> None:
    """Replace the dict field ``name`` of the frozen dataclass ``result`` by a read-only deep
    copy of it (the caller's dict stays the caller's)."""
    object.__setattr__(result, name, ReadOnlyDict(copy.deepcopy(dict(getattr(result, name)))))


def _own_provenance(result: Any) -> None:
    freeze_field(result, "provenance")


def trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    """The trapezoid rule (``np.trapezoid`` is numpy >= 2 only)."""
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2)


def _frozen_array(values) -> np.ndarray:
    array = np.array(values, dtype=np.float64)  # a copy
    array.setflags(write=False)
    return array


@dataclass(frozen=True)
class EigenResult:
    """Eigenvalues of a symmetric operator (from :mod:`landscape.curvature.eigen`).

    Attributes:
        eigenvalues: the estimates, algebraically largest first for the top of the spectrum
            (smallest first for :func:`~landscape.curvature.eigen.smallest_eigenvalue`).
        vectors: the unit eigenvectors as an ``(n, k)`` tensor (column ``i`` belongs to
            ``eigenvalues[i]``), or ``None`` when not asked for.
        residuals: relative Ritz residuals ``||H v - theta v|| / |theta|`` per eigenvalue.
        converged: whether every residual reached ``tol``.
        hvp_count: operator products this call used.
        history: per iteration, the tuple of estimates at that point.
        method: ``"lanczos"`` or ``"power"``.
        tol, seed, seconds, provenance: the settings, the wall time, and the operator's facts
            plus ``algorithm``, ``tol`` and ``seed``.
    """

    eigenvalues: tuple[float, ...]
    vectors: Tensor | None = field(repr=False, compare=False)
    residuals: tuple[float, ...]
    converged: bool
    hvp_count: int
    history: tuple[tuple[float, ...], ...]
    method: str
    tol: float
    seed: int
    seconds: float
    provenance: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        _own_provenance(self)

    def to_dict(self) -> dict:
        """JSON-able dict of everything but the eigenvectors."""
        return result_dict(self, skip=("vectors",))

    def summary(self) -> dict:
        """The short JSON view of the command line: eigenvalues, residuals, ``converged``,
        ``hvp_count`` and ``seconds``."""
        return {
            "eigenvalues": list(self.eigenvalues),
            "residuals": list(self.residuals),
            "converged": self.converged,
            "hvp_count": self.hvp_count,
            "seconds": self.seconds,
        }


@dataclass(frozen=True)
class TraceResult:
    """A stochastic trace estimate (from :mod:`landscape.curvature.trace`).

    Attributes:
        trace: the estimate of ``tr(H)``.
        stderr: its standard error (the estimator's own spread; see each estimator).
        hvp_count: operator products this call used.
        method: ``"hutchinson"``, ``"hutch++"`` or ``"xtrace"``.
        history: the running estimate after each stochastic sample, where the estimator has
            one (empty for XTrace, whose samples are used all at once).
        seed, seconds, provenance: as in :class:`EigenResult`.
    """

    trace: float
    stderr: float
    hvp_count: int
    method: str
    history: tuple[float, ...]
    seed: int
    seconds: float
    provenance: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        _own_provenance(self)

    def to_dict(self) -> dict:
        """JSON-able dict of the result."""
        return result_dict(self)


@dataclass(frozen=True)
class DensityResult:
    """A smoothed spectral density by stochastic Lanczos quadrature (from
    :mod:`landscape.curvature.density`).

    Attributes:
        grid: the eigenvalue axis, shape ``(grid_points,)``.
        density: the smoothed density on ``grid``, integrating to 1 (trapezoid rule).
        nodes: Ritz values, shape ``(probes, steps)``.
        weights: their quadrature weights (squared first components of the Ritz vectors of
            the tridiagonal), shape ``(probes, steps)``; each row sums to 1.
        sigma: the standard deviation of the Gaussian put on each node.
        hvp_count, seed, seconds, provenance: as in :class:`EigenResult`.
    """

    grid: np.ndarray = field(compare=False)
    density: np.ndarray = field(compare=False)
    nodes: np.ndarray = field(compare=False)
    weights: np.ndarray = field(compare=False)
    sigma: float
    hvp_count: int
    seed: int
    seconds: float
    provenance: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("grid", "density", "nodes", "weights"):
            object.__setattr__(self, name, _frozen_array(getattr(self, name)))
        _own_provenance(self)

    def moments(self, p: int, *, smoothed: bool = True) -> np.ndarray:
        """The moments of orders ``0..p`` of the spectral density, as an array of ``p + 1``.

        ``smoothed=True`` integrates ``lambda^j * density`` over the grid (trapezoid rule), so
        the second moment carries the smoothing's extra ``sigma^2``. ``smoothed=False`` reads the
        quadrature directly: the mean over probes of ``sum_i w_i theta_i^j``, which for
        ``j <= 2 * steps - 1`` is exactly the probes' estimate of ``tr(H^j) / n``.
        """
        if p < 0:
            raise ValueError(f"p must be >= 0, got {p}")
        orders = range(p + 1)
        if smoothed:
            return np.array([trapezoid(self.grid**j * self.density, self.grid) for j in orders])
        return np.array([float((self.weights * self.nodes**j).sum(axis=1).mean()) for j in orders])

    def to_dict(self) -> dict:
        """JSON-able dict of the result (arrays as lists)."""
        return result_dict(self)
