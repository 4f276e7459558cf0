"""The evaluator of :mod:`landscape.surface`: metrics of a model at grid points.

:class:`SurfaceEvaluator` validates its options, materialises the evaluation data, picks the
evaluation mode and evaluates points; the module docstring of :mod:`landscape.surface`
describes the modes, the forward chunk and determinism. Its machinery lives in its base
classes, one private module each: the moved tensors (:mod:`landscape.evaluate.weights`), the
forward-chunk probe (:mod:`landscape.evaluate.probe`), the compiled path
(:mod:`landscape.evaluate.compiled`), ``vmap`` (:mod:`landscape.evaluate.vmap`), the
metrics (:mod:`landscape.evaluate.stats`), the metric names, sample indices and provenance
(:mod:`landscape.evaluate.provenance`) and the centre's restoration and check
(:mod:`landscape.evaluate.center`).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from landscape.evaluate.center import _CenterCheck
from landscape.evaluate.compiled import _CompiledPath, _fail_on_recompile
from landscape.evaluate.data import (
    _EvalSet,
    _hash_tensors,
    _model_device,
    _model_dtype,
    _nbytes,
    _unaliased,
    as_tensors,
)
from landscape.evaluate.probe import _ForwardChunks
from landscape.evaluate.provenance import _Provenance
from landscape.evaluate.stats import _Statistics
from landscape.evaluate.vmap import _VmapPath
from landscape.evaluate.weights import _MovedTensors

if TYPE_CHECKING:  # pragma: no cover
    from landscape.directions import Directions

LOSSES = ("crossentropy", "mse")
MODES = ("auto", "eager", "compiled", "vmap")
BN_MODES = ("eval", "recompute")
_SECOND_STAT = {"crossentropy": "acc", "mse": "mae"}
# Model outputs of this many bytes are kept before the metrics of those points are computed
# (in one go: O(1) tensor ops per group of points, not per batch).
_OUTPUT_BUDGET = 64 << 20
# True: the ``auto`` probe of vmap (:mod:`landscape.evaluate.vmap`) runs on any device (CPU
# too), for tests; normally CUDA only.
_AUTO_VMAP_PROBE_ANY_DEVICE = False


class SurfaceEvaluator(
    _MovedTensors,
    _ForwardChunks,
    _CompiledPath,
    _VmapPath,
    _Statistics,
    _Provenance,
    _CenterCheck,
):
    """Evaluates a model's loss and metrics at points ``theta0 + a * dx (+ b * dy)``.

    Args:
        model: any ``nn.Module`` mapping a batch of inputs to outputs. It is never left
            modified: perturbed weights are written in place during a call and the centre is
            written back (bitwise) before the call returns. The centre ``theta0`` is read at
            construction. If ``device`` differs from the model's device, a deep copy moved to
            ``device`` is evaluated instead.
        directions: a :class:`landscape.directions.Directions` (``x``, ``y``, ``dir_type``,
            ``meta``); its tensors are matched to the model by name (``named_parameters()``
            for ``"weights"``, floating ``state_dict()`` entries for ``"states"``, so BatchNorm
            running statistics move too). Tensors whose directions are zero are not touched.
        data: training (evaluation) data, see :func:`as_tensors`.
        loss: ``"crossentropy"`` (logits ``(N, C, ...)`` and class indices or probabilities;
            metrics loss and top-1 accuracy), ``"mse"`` (metrics loss = mean squared error and
            mean absolute error, both averaged over output elements) or a callable
            ``loss(outputs, targets)`` returning per-sample losses ``(N,)`` or the batch mean
            (a 0-dim tensor; then only ``loss`` is reported).
        test_data: optional second data set evaluated at the same points (``test_*`` metrics).
        bn_mode: ``"eval"`` (frozen running statistics of the centre, loss-landscape's
            behaviour) or ``"recompute"`` (at each point the BatchNorm running statistics are
            re-estimated by train-mode passes over ``data`` without gradients, as a cumulative
            average over its batches, then the point is evaluated in eval mode; the model's
            buffers are restored after every call).
        batch_size: evaluation batch size (batches are contiguous slices in index order).
        subset, subset_seed: a subset of ``data`` (see :func:`as_tensors`).
        test_subset: a subset of ``test_data`` (same seed), by default all of it.
        mode: ``"auto"``, ``"eager"``, ``"compiled"`` or ``"vmap"`` (see :mod:`landscape.surface`).
        device: evaluation device, by default the model's.
        points_per_call: K of ``vmap`` (points per forward), at most 64 by default: on CUDA
            as many points as fit in half the free GPU memory (activations of one batch, measured
            with forward hooks, plus two copies of the moved weights per point); on CPU as many
            as keep one call's activations within 32 MiB (by measurement, cache-sized calls
            are the fastest).
        forward_chunk: samples per forward call of ``eager`` and ``compiled`` (any positive
            number, at most the largest data set; the outputs of the chunks are concatenated).
            ``None`` (default): chosen at construction by a timing probe at the centre
            (``batch_size`` halved or doubled while it measures at least 10% faster; see
            :mod:`landscape.surface`), kept only where the outputs are bitwise those of the
            batch-by-batch forward, so the values never depend on the probe; ``batch_size``
            without a probe for one of several MPI ranks. Metrics and standard errors are
            always per nominal batch of ``batch_size``. The choice and the probe's timings are
            in ``provenance["execution"]`` (``forward_chunk``, ``forward_chunk_choice``,
            ``forward_chunk_probe``).

    Per-point values are deterministic: the same coordinates give the same bits whichever
    chunk evaluates them.
    """

    def __init__(
        self,
        model: nn.Module,
        directions: Directions,
        data: Any,
        *,
        loss: str | Callable[[Tensor, Tensor], Tensor] = "crossentropy",
        test_data: Any = None,
        bn_mode: str = "eval",
        batch_size: int = 128,
        subset: int | Sequence[int] | np.ndarray | None = None,
        subset_seed: int = 0,
        test_subset: int | Sequence[int] | np.ndarray | None = None,
        mode: str = "auto",
        device: torch.device | str | None = None,
        points_per_call: int | None = None,
        forward_chunk: int | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if isinstance(loss, str):
            if loss not in LOSSES:
                raise ValueError(f"loss must be one of {LOSSES} or a callable, got {loss!r}")
        elif not callable(loss):
            raise TypeError("loss must be 'crossentropy', 'mse' or a callable")
        if bn_mode not in BN_MODES:
            raise ValueError(f"bn_mode must be one of {BN_MODES}, got {bn_mode!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if points_per_call is not None and (
            not isinstance(points_per_call, int) or points_per_call < 1
        ):
            raise ValueError(f"points_per_call must be a positive integer, got {points_per_call}")
        if forward_chunk is not None and (
            isinstance(forward_chunk, bool)
            or not isinstance(forward_chunk, int)
            or forward_chunk < 1
        ):
            raise ValueError(f"forward_chunk must be a positive integer, got {forward_chunk!r}")
        if directions.y is None:
            self.ndim = 1
        else:
            self.ndim = 2

        model_device = _model_device(model)
        self.device = model_device if device is None else torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        if model_device != self.device:
            model = copy.deepcopy(model).to(self.device)
        self.model = model
        self.dtype = _model_dtype(model)
        self.directions = directions
        self.dir_type = directions.dir_type
        self.bn_mode = bn_mode
        self.batch_size = batch_size
        self.loss = loss
        self.loss_name = (
            loss if isinstance(loss, str) else getattr(loss, "__qualname__", repr(loss))
        )
        self._second = _SECOND_STAT.get(loss) if isinstance(loss, str) else None
        self._stat_dtype = torch.float32 if self.device.type == "mps" else torch.float64
        self._subset = subset
        self._subset_seed = subset_seed
        self._test_subset = test_subset
        self.model_sha256 = _hash_tensors(list(model.state_dict().items()))
        directions_items = [(f"x.{k}", v) for k, v in directions.x.items()]
        if self.ndim == 2:
            directions_items += [(f"y.{k}", v) for k, v in directions.y.items()]
        self.directions_sha256 = _hash_tensors(directions_items)

        self._sets = [self._materialise("train", data, subset, subset_seed)]
        if test_data is not None:
            self._sets.append(self._materialise("test", test_data, test_subset, subset_seed))
        self._num_batches = sum(len(s.bounds) for s in self._sets)
        self._groups = self._build_groups(directions)
        self._batchnorms = [
            m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats
        ]
        self._storages = {
            t.untyped_storage().data_ptr()
            for t in itertools.chain(model.parameters(), model.buffers())
        }

        self.mode_requested = mode
        self._requested_points_per_call = points_per_call
        self.points_per_call = 1
        self._notes: dict[str, Any] = {}
        self._folded = None
        self._compiled = None
        # compiled mode, K points per call: one compiled function per evaluation set
        self._points_compiled: list[Callable[..., Tensor]] | None = None
        probe_vmap = False
        if mode == "auto":
            # eager, unless (CUDA, eval-mode BatchNorm) vmap measures faster at the centre
            mode = "eager"
            probe_vmap = bn_mode == "eval" and (
                self.device.type == "cuda" or _AUTO_VMAP_PROBE_ANY_DEVICE
            )
        self.mode = mode
        self._probe_batch_seconds: float | None = None  # one nominal batch forward (probe)
        self._probe_cheap = False  # the probe timed whole passes (then compiled is probed too)
        if mode == "vmap":
            self._setup_vmap(strict=self.mode_requested == "vmap")
        else:
            self._setup_forward_chunks(forward_chunk)
            if mode == "compiled":
                self._setup_compiled()
                self._setup_compiled_points()
            elif probe_vmap:
                self._probe_auto_vmap()

    # ----------------------------------------------------------------- construction helpers

    def _materialise(self, name: str, data: Any, subset: Any, seed: int) -> _EvalSet:
        inputs, targets, indices = as_tensors(
            data, subset=subset, subset_seed=seed, device=self.device
        )
        if inputs.is_floating_point() and inputs.dtype != self.dtype:
            inputs = inputs.to(self.dtype)
        if self.loss == "crossentropy":
            if not targets.is_floating_point():
                targets = targets.long()
            elif targets.dtype != self.dtype:
                targets = targets.to(self.dtype)
        elif self.loss == "mse" and targets.dtype != self.dtype:
            targets = targets.to(self.dtype)
        size = len(inputs)
        bounds = [(s, min(s + self.batch_size, size)) for s in range(0, size, self.batch_size)]
        sizes = np.array([stop - start for start, stop in bounds], dtype=np.float64)
        batches = [(inputs[start:stop], targets[start:stop]) for start, stop in bounds]
        evalset = _EvalSet(name, inputs, targets, indices, bounds, sizes, batches)
        evalset.set_chunk(self.batch_size)
        return evalset

    # ----------------------------------------------------------------- public API

    @property
    def default_chunk_size(self) -> int:
        """Points per chunk that keep fast paths busy: K for vmap, otherwise 16."""
        return self.points_per_call if self.points_per_call > 1 else 16

    def evaluate_points(self, coords: np.ndarray) -> dict[str, np.ndarray]:
        """Metrics at ``coords`` ``(K, ndim)``: each metric as a float64 array ``(K,)``."""
        coords = np.asarray(coords, dtype=np.float64)
        if coords.ndim == 1 and self.ndim == 1:
            coords = coords.reshape(-1, 1)
        if coords.ndim != 2 or coords.shape[1] != self.ndim:
            raise ValueError(f"coords must be shaped (K, {self.ndim}), got {coords.shape}")
        if not np.all(np.isfinite(coords)):
            raise ValueError("coords must be finite")
        results = {name: np.full(len(coords), np.nan) for name in self.metric_names}
        if len(coords) == 0:
            return results
        with self._prepared(), torch.no_grad():
            if self.mode == "vmap" or self._points_compiled is not None:
                # K points per call, every call padded to K (same shapes, same bits)
                width = self.points_per_call
                point_stats = (
                    self._vmap_point_stats if self.mode == "vmap" else self._compiled_point_stats
                )
                for start in range(0, len(coords), width):
                    chunk = coords[start : start + width]
                    padded = np.concatenate([chunk, np.repeat(chunk[-1:], width - len(chunk), 0)])
                    stats = point_stats(padded)[: len(chunk)]
                    self._store(results, start, stats)
            else:
                # The outputs of several points are kept and their metrics computed together:
                # per-sample losses of every kept row in one call, per-batch sums by reshaping,
                # one host copy (O(1) tensor ops per group of points).
                pending: list[list[list[Any]]] = []
                held = 0
                first = 0
                for k, coord in enumerate(coords):
                    outputs = self._point_outputs(coord)
                    pending.append(outputs)
                    held += sum(_nbytes(out) for per_set in outputs for out in per_set)
                    if held >= _OUTPUT_BUDGET or k == len(coords) - 1:
                        self._store(results, first, self._outputs_stats(pending))
                        pending, held, first = [], 0, k + 1
        return results

    # ----------------------------------------------------------------- evaluation internals

    def _recompute_batchnorm(self) -> None:
        momenta = [bn.momentum for bn in self._batchnorms]
        for bn in self._batchnorms:
            bn.reset_running_stats()
            bn.momentum = None
            bn.train()
        try:
            for inputs, _ in self._sets[0].batches:
                self.model(inputs)
        finally:
            for bn, momentum in zip(self._batchnorms, momenta):
                bn.momentum = momentum
                bn.eval()

    def _point_outputs(self, coord: np.ndarray) -> list[list[Any]]:
        """The model's outputs at one point: per evaluation set, one entry per forward chunk."""
        self._set_point(coord)
        if self.bn_mode == "recompute" and self._batchnorms:
            self._recompute_batchnorm()
        if self.mode == "compiled":
            self._folded.refresh()
            compiled = self._compiled
            with _fail_on_recompile():
                return [
                    [
                        out if len(out) == stop - start else out[: stop - start]
                        for out, (start, stop) in zip(
                            (compiled(padded) for padded in evalset.padded), evalset.chunks
                        )
                    ]
                    for evalset in self._sets
                ]
        model, owned = self.model, self._storages
        # Outputs are kept until the metrics of several points are computed: one that is a
        # view of the model's own tensors (which the next point overwrites) is copied.
        return [
            [_unaliased(model(inputs), owned) for inputs in evalset.chunk_inputs]
            for evalset in self._sets
        ]
