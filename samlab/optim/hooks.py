"""Step observability: gradient norm, perturbation norm, sharpness gap, passes per step."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["StepRecorder"]

_FIELDS = (
    "grad_norm",
    "perturbation_norm",
    "clean_loss",
    "perturbed_loss",
    "sharpness_gap",
    "mask_density",
    "effective_radius",
    "mask_overlap",
)


def _as_float(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return float(value.detach().cpu())  # keeps float64 precision
    return float(value)


class StepRecorder:
    """Records ``optimizer.last_step`` after every step through ``register_step_post_hook``.

    ``records`` is a list of dicts with ``grad_norm``, ``perturbation_norm``, ``clean_loss``,
    ``perturbed_loss``, ``sharpness_gap`` (loss at w+e minus loss at w; None when a pass
    did not run), ``passes`` and ``skipped``; sparse SAM adds ``mask_density``,
    ``effective_radius`` and ``mask_overlap`` (None for the other optimizers). Turning it on
    makes the optimizer compute the perturbation norm (one extra norm per step); ``remove()``
    detaches it.

    Example::

        rec = StepRecorder(opt)
        for x, y in loader: opt.step(closure)
        rec.records[-1]["sharpness_gap"]
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.records: list[dict[str, Any]] = []
        if hasattr(optimizer, "track_stats"):
            optimizer.track_stats = True
        self._handle = optimizer.register_step_post_hook(self._hook)

    def _hook(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        last = getattr(optimizer, "last_step", None) or {"passes": 1}
        record = {k: _as_float(last.get(k)) for k in _FIELDS}
        record["passes"] = int(last.get("passes", 1))
        record["skipped"] = bool(last.get("skipped", False))
        self.records.append(record)

    def remove(self) -> None:
        self._handle.remove()
        if hasattr(self.optimizer, "track_stats"):
            self.optimizer.track_stats = False
