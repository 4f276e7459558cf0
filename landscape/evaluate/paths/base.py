"""The protocol of an evaluation path, and what every path shares: :class:`EvaluationPath`.

A path evaluates grid points of one :class:`~landscape.evaluate.SurfaceEvaluator`, chosen once
at its construction (:mod:`landscape.evaluate.paths.choose`). It holds the moved weights, the
evaluation sets and the metrics, and answers

- ``mode``: what the provenance calls it (``"eager"``, ``"compiled"`` or ``"vmap"``);
- ``points_per_call``: K, the points one call evaluates (1: point by point);
- ``batch_sums(coords)``: per-batch sums ``(k, n_batches, n_stats)`` of consecutive groups of
  the points ``coords`` ``(K, ndim)``, each with the index of its first point;
- ``evaluate(coords)``: the metrics of ``coords`` from those sums (shared by every path).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from landscape.evaluate.data import EvalSet
from landscape.evaluate.stats import Metrics
from landscape.evaluate.weights import MovedWeights


class EvaluationPath(ABC):
    """Base of the evaluation paths: ``weights`` moved to the points, the evaluation ``sets``
    and the ``metrics`` computed over them; subclasses give ``mode`` and ``batch_sums``."""

    mode: str
    points_per_call = 1

    def __init__(self, weights: MovedWeights, sets: Sequence[EvalSet], metrics: Metrics) -> None:
        self.weights = weights
        self.sets = list(sets)
        self.metrics = metrics

    @abstractmethod
    def batch_sums(self, coords: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """``(first, sums)`` per group of consecutive points: the index of the group's first
        point and its per-batch sums ``(k, n_batches, n_stats)``."""

    def evaluate(self, coords: np.ndarray) -> dict[str, np.ndarray]:
        """Metrics at ``coords`` ``(K, ndim)`` (finite): each a float64 array ``(K,)``. The
        model is in eval mode meanwhile and at its centre afterwards."""
        results = self.metrics.empty(len(coords))
        if len(coords) == 0:
            return results
        with self.weights.prepared(), torch.no_grad():
            for first, sums in self.batch_sums(coords):
                self.metrics.store(results, first, sums)
        return results


class PointsPath(EvaluationPath):
    """Base of the paths that evaluate K points per call (``points_per_call``): every call is
    padded to K points (the last point repeated), so a point gives the same bits in any chunk
    and at any position; subclasses give ``point_stats``."""

    def __init__(
        self,
        weights: MovedWeights,
        sets: Sequence[EvalSet],
        metrics: Metrics,
        points_per_call: int,
    ) -> None:
        super().__init__(weights, sets, metrics)
        self.points_per_call = points_per_call

    @abstractmethod
    def point_stats(self, coords: np.ndarray) -> np.ndarray:
        """Per-batch sums ``(K, n_batches, n_stats)`` of exactly K points (one host sync)."""

    def batch_sums(self, coords: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        width = self.points_per_call
        for start in range(0, len(coords), width):
            chunk = coords[start : start + width]
            padded = np.concatenate([chunk, np.repeat(chunk[-1:], width - len(chunk), 0)])
            yield start, self.point_stats(padded)[: len(chunk)]
