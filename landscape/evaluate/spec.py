"""The settings of a :class:`~landscape.evaluate.SurfaceEvaluator`, validated once and frozen.

:class:`EvaluationSpec` is what the caller asked for (loss, BatchNorm mode, batches, subsets,
evaluation mode and its knobs); :class:`ProbeSettings` holds the thresholds of the timing probes
that choose the forward chunk and the evaluation path at construction, and their clock. The
provenance of a surface is built from the spec (:mod:`landscape.evaluate.provenance`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

LOSSES = ("crossentropy", "mse")
MODES = ("auto", "eager", "compiled", "vmap")
BN_MODES = ("eval", "recompute")
#: model outputs of this many bytes are kept before the metrics of those points are computed
#: (in one go: O(1) tensor ops per group of points, not per batch)
OUTPUT_BUDGET = 64 << 20

#: ``timer(passes, rounds)``: best-of-``rounds`` seconds of each callable of ``passes``
Timer = Callable[[dict[Any, Callable[[], Any]], int], dict[Any, float]]


@dataclass(frozen=True)
class ProbeSettings:
    """Thresholds and clock of the timing probes run at construction.

    Args:
        max_pass_seconds: the forward-chunk probe times whole passes over the training samples
            when one takes at most this (the model is then "cheap"), otherwise a prefix; the
            compiled-vs-eager and K-points probes run only on cheap models.
        max_batch_seconds: no forward-chunk probe at all when one batch forward takes longer.
        min_gain: a probed chunk or fast path is kept only where it takes at most this
            fraction of the time of the best so far (0.9: at least 10% faster; on a shared
            machine smaller differences are within the noise of the probe).
        timer: ``timer(passes, rounds) -> seconds`` of each callable of the dict ``passes``
            (best of ``rounds``); None: :class:`~landscape.evaluate.paths.PassTimer` on the
            evaluation device (interleaved rounds, thread CPU time on one CPU thread).
    """

    max_pass_seconds: float = 0.25
    max_batch_seconds: float = 5.0
    min_gain: float = 0.9
    timer: Timer | None = field(default=None, compare=False)


@dataclass(frozen=True, eq=False)
class EvaluationSpec:
    """The options of a :class:`~landscape.evaluate.SurfaceEvaluator` (see its arguments),
    checked on construction with the evaluator's error messages."""

    loss: str | Callable[[Tensor, Tensor], Tensor] = "crossentropy"
    bn_mode: str = "eval"
    batch_size: int = 128
    subset: int | Sequence[int] | np.ndarray | None = None
    subset_seed: int = 0
    test_subset: int | Sequence[int] | np.ndarray | None = None
    mode: str = "auto"
    points_per_call: int | None = None
    forward_chunk: int | None = None
    probe_vmap: bool | None = None
    probes: ProbeSettings = field(default_factory=ProbeSettings)
    output_budget: int = OUTPUT_BUDGET

    def __post_init__(self) -> None:
        loss = self.loss
        if isinstance(loss, str):
            if loss not in LOSSES:
                raise ValueError(f"loss must be one of {LOSSES} or a callable, got {loss!r}")
        elif not callable(loss):
            raise TypeError("loss must be 'crossentropy', 'mse' or a callable")
        if self.bn_mode not in BN_MODES:
            raise ValueError(f"bn_mode must be one of {BN_MODES}, got {self.bn_mode!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        batch_size = self.batch_size
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        points = self.points_per_call
        if points is not None and (not isinstance(points, int) or points < 1):
            raise ValueError(f"points_per_call must be a positive integer, got {points}")
        if self.forward_chunk is not None and not _positive_int(self.forward_chunk):
            raise ValueError(
                f"forward_chunk must be a positive integer, got {self.forward_chunk!r}"
            )
        if self.probe_vmap not in (None, True, False):
            raise ValueError(f"probe_vmap must be None, True or False, got {self.probe_vmap!r}")
        if not isinstance(self.probes, ProbeSettings):
            raise TypeError(f"probes must be ProbeSettings, got {type(self.probes).__name__}")
        budget = self.output_budget
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
            raise ValueError(
                f"output_budget must be a non-negative integer, got {self.output_budget!r}"
            )

    @property
    def loss_name(self) -> str:
        """The loss as provenance: its name, or a callable's qualified name."""
        loss = self.loss
        return loss if isinstance(loss, str) else getattr(loss, "__qualname__", repr(loss))

    def probes_vmap(self, device: torch.device) -> bool:
        """Whether ``mode="auto"`` measures ``vmap`` against eager at construction: with
        ``bn_mode="eval"`` only; ``probe_vmap=None`` on CUDA only, True on any device."""
        if self.mode != "auto" or self.bn_mode != "eval" or self.probe_vmap is False:
            return False
        return device.type == "cuda" or self.probe_vmap is True


def _positive_int(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= 1


def check_coords(coords: Any, ndim: int) -> np.ndarray:
    """Grid coordinates as a float64 array ``(K, ndim)`` (a 1-D array is ``K`` points of a 1-D
    grid); ``ValueError`` for another shape or a non-finite coordinate."""
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim == 1 and ndim == 1:
        coords = coords.reshape(-1, 1)
    if coords.ndim != 2 or coords.shape[1] != ndim:
        raise ValueError(f"coords must be shaped (K, {ndim}), got {coords.shape}")
    if not np.all(np.isfinite(coords)):
        raise ValueError("coords must be finite")
    return coords
