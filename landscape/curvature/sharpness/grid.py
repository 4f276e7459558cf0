"""One sharpness measure over a grid of radii: :func:`sharpness_grid`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

from landscape.curvature.sharpness.results import SharpnessResult

__all__ = ["MEASURES", "sharpness_grid"]

#: the measures by name: module path and function of each
MEASURES = {
    "worst_case": ("landscape.curvature.sharpness.worst_case", "worst_case_sharpness"),
    "average": ("landscape.curvature.sharpness.average", "average_sharpness"),
    "epsilon": ("landscape.curvature.sharpness.keskar", "epsilon_sharpness"),
}


def sharpness_grid(
    measure: str | Callable[..., SharpnessResult],
    model: nn.Module,
    data: Any,
    rhos: Iterable[float],
    **kw: Any,
) -> tuple[SharpnessResult, ...]:
    """``measure(model, data, rho, **kw)`` for every ``rho`` of ``rhos``, in order.

    ``measure`` is one of :func:`worst_case_sharpness`, :func:`average_sharpness`,
    :func:`epsilon_sharpness` (its ``epsilon`` takes the place of ``rho``) or their names
    ``"worst_case"``, ``"average"``, ``"epsilon"``. Each radius is a separate call with the
    same ``kw`` (so the same seed, random starts and noise draws, scaled by ``rho``).
    """
    if isinstance(measure, str):
        if measure not in MEASURES:
            names = sorted(MEASURES)
            raise ValueError(f"measure must be one of {names} or a callable, got {measure!r}")
        import importlib

        module, name = MEASURES[measure]
        measure = getattr(importlib.import_module(module), name)
    rhos = [float(rho) for rho in rhos]
    if not rhos:
        raise ValueError("rhos is empty; pass at least one radius")
    return tuple(measure(model, data, rho, **kw) for rho in rhos)
