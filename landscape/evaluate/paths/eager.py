"""``mode="eager"``, the reference twin of the fast paths: :class:`EagerPath`.

Point by point: the weights are set (:class:`~landscape.evaluate.weights.MovedWeights`), the
model runs over each evaluation set in forward chunks, and the outputs of a group of points (up
to ``output_budget`` bytes, 64 MiB by default) are kept and their metrics computed together:
per-sample losses and correctness of all their rows in one call, per-batch sums by reshaping,
one host copy and numpy over the whole group, so the metric bookkeeping costs O(1) tensor ops
per group of points instead of a few per batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch import Tensor

from landscape.evaluate.data import EvalSet
from landscape.evaluate.paths.base import EvaluationPath
from landscape.evaluate.spec import OUTPUT_BUDGET
from landscape.evaluate.stats import Metrics
from landscape.evaluate.weights import MovedWeights


def flatten_tensors(value: Any) -> list[Tensor]:
    """The tensors of (possibly nested) model outputs, in order."""
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in flatten_tensors(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in flatten_tensors(item)]
    return []


def nbytes(value: Any) -> int:
    """Bytes of the tensors of (possibly nested) model outputs."""
    return sum(t.numel() * t.element_size() for t in flatten_tensors(value))


class EagerPath(EvaluationPath):
    """The plain loop over points (see the module docstring)."""

    mode = "eager"

    def __init__(
        self,
        weights: MovedWeights,
        sets: Sequence[EvalSet],
        metrics: Metrics,
        output_budget: int = OUTPUT_BUDGET,
    ) -> None:
        super().__init__(weights, sets, metrics)
        self.output_budget = output_budget

    def outputs(self, coord: np.ndarray) -> list[list[Any]]:
        """The model's outputs at one point: per evaluation set, one entry per forward chunk."""
        self.weights.set_point(coord)
        model, unaliased = self.weights.model, self.weights.unaliased
        # Outputs are kept until the metrics of several points are computed: one that is a
        # view of the model's own tensors (which the next point overwrites) is copied.
        return [
            [unaliased(model(inputs)) for inputs in evalset.chunk_inputs] for evalset in self.sets
        ]

    def batch_sums(self, coords: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        # The outputs of several points are kept and their metrics computed together:
        # per-sample losses of every kept row in one call, per-batch sums by reshaping,
        # one host copy (O(1) tensor ops per group of points).
        pending: list[list[list[Any]]] = []
        held = 0
        first = 0
        for k, coord in enumerate(coords):
            outputs = self.outputs(coord)
            pending.append(outputs)
            held += sum(nbytes(out) for per_set in outputs for out in per_set)
            if held >= self.output_budget or k == len(coords) - 1:
                yield first, self.metrics.outputs_stats(pending)
                pending, held, first = [], 0, k + 1
