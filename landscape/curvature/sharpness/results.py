"""The result of a parameter-space sharpness measure: :class:`SharpnessResult`.

One frozen value per measure and radius, JSON-able through :meth:`SharpnessResult.to_dict`
(non-finite numbers become ``None``), with the settings and the provenance (sha256 of the
model's state and of the evaluation data, BatchNorm mode ``"eval"``) needed to recompute it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from landscape.curvature.results import freeze_field
from landscape.evaluate.provenance import jsonable
from landscape.evaluate.stats import standard_error


@dataclass(frozen=True)
class SharpnessResult:
    """One sharpness value and how it was obtained.

    Attributes:
        measure: ``"worst_case"``, ``"average"`` or ``"epsilon"``.
        value: the headline number: the mean loss increase (worst case, average), or
            Keskar's ``100 * (max L(w + delta) - L(w)) / (1 + L(w))`` (epsilon).
        loss: ``L(w)`` on the evaluation set (the sample-weighted mean over chunks).
        loss_increase: mean of ``L(w + delta) - L(w)`` over ``values`` (weights ``weights``).
        loss_increase_stderr: its standard error over chunks (worst case) or noise draws
            (average); NaN when there is only one.
        error, error_increase, error_increase_stderr: the same for the 0-1 error (at the
            loss-maximising ``delta`` for the worst case); None unless the loss is
            ``"crossentropy"``.
        values: loss increase per chunk (worst case, epsilon) or per noise draw (average).
        error_values: the same for the 0-1 error (None unless cross-entropy).
        weights: the weight of each entry of ``values`` (chunk sizes, or 1 per draw).
        rho: the radius (``epsilon`` for Keskar's measure).
        norm: ``"l2"`` or ``"linf"``; ``"box"`` for Keskar's measure.
        adaptive: whether the ball is scaled elementwise by ``|w|`` (+ ``eta``).
        m: chunk size of m-sharpness (None: the whole set at once).
        steps: ascent steps per chunk (None for the average case).
        samples: noise draws (None for worst-case measures).
        seed: the seed of the random starts, noise or subspace.
        seconds: wall-clock time of the computation.
        evaluations: forward passes over a chunk (with or without backward), all chunks.
        settings: the remaining options (step size, eta, logit normalisation, sigma, ...).
        provenance: model and data digests, sizes, dtype, device, versions.
        bn_mode: always ``"eval"`` (BatchNorm running statistics, never updated).
    """

    measure: str
    value: float
    loss: float
    loss_increase: float
    loss_increase_stderr: float
    error: float | None
    error_increase: float | None
    error_increase_stderr: float | None
    values: tuple[float, ...]
    error_values: tuple[float, ...] | None
    weights: tuple[float, ...]
    rho: float
    norm: str
    adaptive: bool
    m: int | None
    steps: int | None
    samples: int | None
    seed: int
    seconds: float
    evaluations: int
    settings: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    bn_mode: str = "eval"

    def __post_init__(self) -> None:
        freeze_field(self, "settings")
        freeze_field(self, "provenance")

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain JSON values (tuples as lists, NaN and infinities as None)."""
        return _finite(jsonable(dataclasses.asdict(self)))


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def weighted_summary(values: Sequence[float], weights: Sequence[float]) -> tuple[float, float]:
    """``(mean, standard error)`` of ``values`` weighted by ``weights``: the sample-weighted
    mean of per-chunk means and :func:`landscape.evaluate.standard_error` of it (for equal
    weights ``std(values, ddof=1) / sqrt(len(values))``; NaN for a single value)."""
    values = np.asarray(values, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    mean = float(np.sum(values * weights) / np.sum(weights))
    return mean, standard_error(values * weights, weights)


def summarise(
    measure: str,
    *,
    references: Sequence[tuple[float, float | None]],
    perturbed: Sequence[tuple[float, float | None]],
    weights: Sequence[float],
    **fields: Any,
) -> SharpnessResult:
    """A :class:`SharpnessResult` from ``(loss, error)`` pairs at ``w`` (``references``) and at
    ``w + delta`` (``perturbed``), one pair per chunk or noise draw, with their ``weights``;
    ``fields`` gives the remaining attributes (``value`` defaults to the loss increase)."""
    rises = [after[0] - before[0] for before, after in zip(references, perturbed, strict=True)]
    loss, _ = weighted_summary([r[0] for r in references], weights)
    loss_increase, loss_stderr = weighted_summary(rises, weights)
    error = error_increase = error_stderr = error_values = None
    if references[0][1] is not None:
        error_values = tuple(
            after[1] - before[1] for before, after in zip(references, perturbed, strict=True)
        )
        error, _ = weighted_summary([r[1] for r in references], weights)
        error_increase, error_stderr = weighted_summary(error_values, weights)
    fields.setdefault("value", loss_increase)
    return SharpnessResult(
        measure=measure,
        loss=loss,
        loss_increase=loss_increase,
        loss_increase_stderr=loss_stderr,
        error=error,
        error_increase=error_increase,
        error_increase_stderr=error_stderr,
        values=tuple(rises),
        error_values=error_values,
        weights=tuple(float(w) for w in weights),
        **fields,
    )
