"""The centre check of a :class:`~landscape.evaluate.SurfaceEvaluator`: :class:`CenterCheck`.

The metrics at the centre (coordinates 0, as the evaluation path computes them) are compared
with the model's own loss over the same samples (no weight writes, no fast path), within
``CENTER_TOLERANCE``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from landscape.evaluate.data import EvalSet
from landscape.evaluate.weights import BATCHNORM, MovedWeights, Prepared

# (rtol, atol) of check_center per parameter dtype.
CENTER_TOLERANCE = {
    torch.float64: (1e-9, 1e-12),
    torch.float32: (1e-4, 1e-6),
    torch.float16: (1e-2, 1e-3),
    torch.bfloat16: (2e-2, 1e-3),
}


class CenterCheck:
    """The model's own metrics at the centre over ``sets`` (:meth:`reference`) and their
    comparison with the metrics of the evaluation path (:meth:`check`).

    With ``recompute`` (``bn_mode="recompute"``) the BatchNorm statistics are re-estimated on a
    deep copy of the model first, by train-mode passes over the training batches.
    """

    def __init__(
        self,
        weights: MovedWeights,
        sets: Sequence[EvalSet],
        loss: str | Callable[[Tensor, Tensor], Tensor],
        recompute: bool,
    ) -> None:
        self.weights = weights
        self.sets = list(sets)
        self.loss = loss
        self.recompute = recompute

    def reference(self) -> dict[str, float]:
        """The metrics at the centre from the model itself: its outputs over the nominal
        batches concatenated and the loss applied once (``<set>_loss`` and ``<set>_acc`` or
        ``<set>_mae``)."""
        model = self.weights.model
        if self.recompute and self.weights.batchnorms:
            model = copy.deepcopy(model)
            for module in model.modules():
                if isinstance(module, BATCHNORM) and module.track_running_stats:
                    module.reset_running_stats()
                    module.momentum = None
        own = model is self.weights.model
        result = {}
        with self.weights.prepared() if own else Prepared(model), torch.no_grad():
            if not own:
                first = self.sets[0]
                for module in model.modules():
                    if isinstance(module, BATCHNORM):
                        module.train()
                for start, stop in first.bounds:
                    model(first.inputs[start:stop])
                model.eval()
            for evalset in self.sets:
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

    def check(self, values: dict[str, float], *, mode: str, rtol: float, atol: float) -> None:
        """Raise ``RuntimeError`` naming the first metric of :meth:`reference` that differs
        from ``values`` (the metrics at the centre) by more than ``atol + rtol * |expected|``."""
        for name, expected in self.reference().items():
            got = values[name]
            if not abs(got - expected) <= atol + rtol * abs(expected):
                raise RuntimeError(
                    f"centre check failed: {name} is {got!r} on the surface but {expected!r} "
                    f"from the model itself (mode={mode!r}, rtol={rtol}, atol={atol})"
                )
