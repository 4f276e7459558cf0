"""What :class:`~landscape.surface.SurfaceEvaluator` reports about itself.

The names of the metrics it returns, the indices of the samples it evaluates (what a surface
file stores as ``train_indices`` / ``test_indices``) and its provenance: a JSON-able description
of what it computes, stored with the surface. :class:`_Provenance` holds these properties of
:class:`~landscape.surface.SurfaceEvaluator` (from its ``_sets``, ``_second``, ``_subset``,
``_test_subset``, options and hashes).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from landscape.evaluate.data import (
    _describe_subset,
    _jsonable,
    _package_version,
    hash_indices,
)


class _Provenance:
    """Metric names, sample indices and provenance of
    :class:`~landscape.surface.SurfaceEvaluator` (a base class of it)."""

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The metrics this evaluator returns, e.g. ``("train_loss", "train_acc", ...)``."""
        names = []
        stats = ["loss"] + ([self._second] if self._second else [])
        for evalset in self._sets:
            names += [f"{evalset.name}_{s}" for s in stats]
            names += [f"{evalset.name}_{s}_se" for s in stats]
        return tuple(names)

    @property
    def train_indices(self) -> np.ndarray:
        """Indices (into the training data) of the evaluated samples, in evaluation order."""
        return self._sets[0].indices.copy()

    @property
    def test_indices(self) -> np.ndarray | None:
        """Indices of the evaluated test samples, or None without test data."""
        return self._sets[1].indices.copy() if len(self._sets) > 1 else None

    @property
    def sample_indices(self) -> dict[str, np.ndarray]:
        """``{"train": indices}`` when ``subset`` was given, plus ``"test"`` when
        ``test_subset`` was: what a surface file stores as ``train_indices`` /
        ``test_indices`` (with their sha256 in the provenance either way)."""
        result = {}
        if self._subset is not None:
            result["train"] = self.train_indices
        if len(self._sets) > 1 and self._test_subset is not None:
            result["test"] = self.test_indices
        return result

    @property
    def provenance(self) -> dict[str, Any]:
        """JSON-able description of what this evaluator computes (stored with the surface)."""
        execution: dict[str, Any] = {"mode_requested": self.mode_requested}
        if self.points_per_call > 1:
            execution["points_per_call"] = self.points_per_call
        if self.device.type == "cuda":
            execution["cudnn_allow_tf32"] = bool(torch.backends.cudnn.allow_tf32)
            execution["matmul_allow_tf32"] = bool(torch.backends.cuda.matmul.allow_tf32)
        execution.update(self._notes)
        result: dict[str, Any] = {
            "directions": _jsonable(dict(self.directions.meta)),
            "directions_sha256": self.directions_sha256,
            "dir_type": self.dir_type,
            "loss_name": self.loss_name,
            "bn_mode": self.bn_mode,
            "subset": _describe_subset(self._subset),
            "subset_seed": self._subset_seed,
            "train_size": int(self._sets[0].indices.size),
            "train_indices_sha256": hash_indices(self._sets[0].indices),
            "model_sha256": self.model_sha256,
            "model_class": type(self.model).__qualname__,
            "dtype": str(self.dtype).replace("torch.", ""),
            "batch_size": self.batch_size,
            "mode": self.mode,
            "device": self.device.type,
            "execution": execution,
            "torch_version": str(torch.__version__),
            "numpy_version": str(np.__version__),
            "landscape_version": _package_version(),
        }
        if len(self._sets) > 1:
            result["test_subset"] = _describe_subset(self._test_subset)
            result["test_size"] = int(self._sets[1].indices.size)
            result["test_indices_sha256"] = hash_indices(self._sets[1].indices)
        return result
