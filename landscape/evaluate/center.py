"""The centre of :class:`~landscape.surface.SurfaceEvaluator`: kept, and checked.

Every evaluation runs inside :class:`_Prepared`, which puts the model in eval mode and on exit
writes the centre back (bitwise), restores the BatchNorm buffers (``bn_mode="recompute"``) and
every module's training flag, whatever happened. :meth:`_CenterCheck.check_center` compares the
metrics at the centre with the model's own loss over the same samples (no weight writes, no fast
path), within ``CENTER_TOLERANCE``. :class:`_CenterCheck` holds these methods of
:class:`~landscape.surface.SurfaceEvaluator`.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

# (rtol, atol) of check_center per parameter dtype.
CENTER_TOLERANCE = {
    torch.float64: (1e-9, 1e-12),
    torch.float32: (1e-4, 1e-6),
    torch.float16: (1e-2, 1e-3),
    torch.bfloat16: (2e-2, 1e-3),
}


class _CenterCheck:
    """The centre of :class:`~landscape.surface.SurfaceEvaluator` (a base class of it): the
    context of every evaluation, the metrics at the centre and their check."""

    def center(self) -> dict[str, float]:
        """Metrics at the unperturbed weights (coordinates 0)."""
        values = self.evaluate_points(np.zeros((1, self.ndim)))
        return {name: float(value[0]) for name, value in values.items()}

    def check_center(self, rtol: float | None = None, atol: float | None = None) -> dict:
        """:meth:`center`, after checking it against the model's own loss.

        The reference runs the model as it is (no weight writes, no fast path) over the same
        samples, concatenates the outputs and applies the loss once (with ``bn_mode=
        "recompute"`` the statistics are re-estimated on a deep copy first). Raises
        ``RuntimeError`` naming the metric when they differ by more than ``rtol``/``atol``
        (defaults per dtype in ``CENTER_TOLERANCE``).
        """
        default_rtol, default_atol = CENTER_TOLERANCE.get(self.dtype, (1e-4, 1e-6))
        rtol = default_rtol if rtol is None else rtol
        atol = default_atol if atol is None else atol
        values = self.center()
        reference = self._reference_center()
        for name, expected in reference.items():
            got = values[name]
            if not abs(got - expected) <= atol + rtol * abs(expected):
                raise RuntimeError(
                    f"centre check failed: {name} is {got!r} on the surface but {expected!r} "
                    f"from the model itself (mode={self.mode!r}, rtol={rtol}, atol={atol})"
                )
        return values

    def _prepared(self):
        return _Prepared(self)

    def _reference_center(self) -> dict[str, float]:
        model = self.model
        if self.bn_mode == "recompute" and self._batchnorms:
            model = copy.deepcopy(self.model)
            for module in model.modules():
                if isinstance(module, _BatchNorm) and module.track_running_stats:
                    module.reset_running_stats()
                    module.momentum = None
        result = {}
        with _Prepared(self, model), torch.no_grad():
            if model is not self.model:
                first = self._sets[0]
                for module in model.modules():
                    if isinstance(module, _BatchNorm):
                        module.train()
                for start, stop in first.bounds:
                    model(first.inputs[start:stop])
                model.eval()
            for evalset in self._sets:
                outputs = torch.cat(
                    [model(evalset.inputs[start:stop]) for start, stop in evalset.bounds]
                )
                if outputs.dtype in (torch.float16, torch.bfloat16):
                    outputs = outputs.float()
                targets = evalset.targets
                if self.loss == "crossentropy":
                    loss = F.cross_entropy(outputs, targets)
                    labels = targets.argmax(1) if targets.is_floating_point() else targets
                    result[f"{evalset.name}_acc"] = float(
                        (outputs.argmax(1) == labels).double().mean()
                    )
                elif self.loss == "mse":
                    targets = targets.reshape(outputs.shape)
                    loss = F.mse_loss(outputs, targets)
                    result[f"{evalset.name}_mae"] = float(F.l1_loss(outputs, targets))
                else:
                    loss = self.loss(outputs, targets).double().mean()
                result[f"{evalset.name}_loss"] = float(loss)
        return result


class _Prepared:
    """Context: model in eval mode; on exit the centre, the BatchNorm buffers (recompute) and
    every module's training flag are restored, whatever happened."""

    def __init__(self, evaluator: _CenterCheck, model: nn.Module | None = None) -> None:
        self.evaluator = evaluator
        self.model = evaluator.model if model is None else model

    def __enter__(self) -> _Prepared:
        self.flags = [(m, m.training) for m in self.model.modules()]
        self.buffers = []
        if self.model is self.evaluator.model and self.evaluator.bn_mode == "recompute":
            for bn in self.evaluator._batchnorms:
                for buffer in bn.buffers(recurse=False):
                    self.buffers.append((buffer, buffer.detach().clone()))
        self.model.eval()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        with torch.no_grad():
            if self.model is self.evaluator.model:
                self.evaluator._restore()
            for buffer, saved in self.buffers:
                buffer.copy_(saved)
        for module, flag in self.flags:
            module.training = flag
