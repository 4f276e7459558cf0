"""``mode="vmap"``: K points per forward over stacked weights (:class:`VmapPath`).

``torch.func.functional_call`` + ``vmap`` over K stacked sets of the moved tensors (the others,
buffers included, stay unbatched), eval mode only. K comes from an activation budget
(:func:`choose_points_per_call`), which the compiled K-point path uses too; ``mode="auto"``
measures this path against the eager loop at construction where it may win (on CUDA; see
:mod:`landscape.evaluate.paths.choose`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape.evaluate.data import EvalSet
from landscape.evaluate.paths.base import PointsPath
from landscape.evaluate.paths.eager import flatten_tensors
from landscape.evaluate.weights import MovedWeights

MAX_POINTS_PER_CALL = 64  # K at most (vmap, and compiled K points per call)
# vmap on CPU: activations of all K points of one call (measured best: K = 4 for the digits
# CNN, 6.6 MB of activations per point at batch 128; K = 64 for the digits MLP, 38 kB).
CPU_ACTIVATION_BUDGET = 32 << 20


def activation_bytes(weights: MovedWeights, evalset: EvalSet) -> int:
    """Bytes of the outputs of every leaf module in one forward of the first nominal batch
    of ``evalset`` (measured with forward hooks)."""
    total = 0

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        nonlocal total
        for tensor in flatten_tensors(output):
            total += tensor.numel() * tensor.element_size()

    model = weights.model
    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with weights.prepared(), torch.no_grad():
            model(evalset.batches[0][0])
    finally:
        for handle in handles:
            handle.remove()
    return total


def choose_points_per_call(
    weights: MovedWeights, evalset: EvalSet, requested: int | None, notes: dict[str, Any]
) -> int:
    """K: ``requested``, else at most :data:`MAX_POINTS_PER_CALL`: on CUDA as many points as
    fit in half the free memory (activations of one batch of ``evalset`` plus two copies of
    the moved weights per point), on CPU as many as keep one call's activations within
    :data:`CPU_ACTIVATION_BUDGET` (noted as ``activation_bytes_per_point``)."""
    if requested is not None:
        return requested
    moved_bytes = weights.moved_bytes
    activations = activation_bytes(weights, evalset)
    if weights.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(weights.device)
        budget, per_point = free // 2, activations + 2 * moved_bytes
    else:  # by measurement: K points' activations should stay in cache
        budget, per_point = CPU_ACTIVATION_BUDGET, activations
    notes["activation_bytes_per_point"] = int(activations)
    return int(max(1, min(MAX_POINTS_PER_CALL, budget // max(1, per_point))))


class VmapPath(PointsPath):
    """K points per forward by ``vmap`` over the stacked moved tensors, batch by batch."""

    mode = "vmap"

    def batch_stats(self, stacked: dict[str, Tensor], inputs: Tensor, targets: Tensor) -> Tensor:
        """Sums ``(K, n_stats)`` of one batch at the K points of ``stacked``."""
        from torch.func import functional_call, vmap

        model, metrics = self.weights.model, self.metrics

        def one_point(tensors: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
            return metrics.batch_stats(functional_call(model, tensors, (x,)), y)

        return vmap(one_point, in_dims=(0, None, None))(stacked, inputs, targets)

    def point_stats(self, coords: np.ndarray) -> np.ndarray:
        stacked = self.weights.stacked(coords)
        sums = [
            self.batch_stats(stacked, inputs, targets)
            for evalset in self.sets
            for inputs, targets in evalset.batches
        ]
        stats = torch.stack(sums, dim=1)
        return stats.cpu().numpy().astype(np.float64, copy=False)

    def check(self) -> None:
        """Raise ``RuntimeError`` unless the first batch at up to two points (the centre)
        agrees with the model's own forward (rtol 1e-3, atol 1e-5)."""
        probe = np.zeros((min(2, self.points_per_call), self.weights.ndim))
        with self.weights.prepared(), torch.no_grad():
            inputs, targets = self.sets[0].batches[0]
            stats = self.batch_stats(self.weights.stacked(probe), inputs, targets)
            expected = self.metrics.batch_stats(self.weights.model(inputs), targets)
        if not torch.allclose(stats[0], expected, rtol=1e-3, atol=1e-5):
            raise RuntimeError("vmap evaluation disagrees with the model's own forward")
