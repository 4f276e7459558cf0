"""The evaluator of a loss surface: metrics of a model at grid points, :class:`SurfaceEvaluator`.

A :class:`SurfaceEvaluator` validates its options into a frozen
:class:`~landscape.evaluate.spec.EvaluationSpec`, materialises the evaluation data once
(:class:`~landscape.evaluate.data.EvalSet`, one per set) and holds what evaluates points: the
moved weights (:class:`~landscape.evaluate.weights.MovedWeights`: a point written into the
model, the centre restored), the metrics (:class:`~landscape.evaluate.stats.Metrics`), the
centre check (:class:`~landscape.evaluate.center.CenterCheck`), the provenance
(:class:`~landscape.evaluate.provenance.Provenance`) and one evaluation path chosen at
construction (:mod:`landscape.evaluate.paths`: eager, compiled, K points per compiled call,
``vmap``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape.evaluate.center import CENTER_TOLERANCE, CenterCheck
from landscape.evaluate.data import EvalSet
from landscape.evaluate.paths import PathChooser
from landscape.evaluate.provenance import Provenance
from landscape.evaluate.spec import OUTPUT_BUDGET, EvaluationSpec, ProbeSettings, check_coords
from landscape.evaluate.stats import Metrics
from landscape.evaluate.weights import MovedWeights, model_device, model_dtype

if TYPE_CHECKING:  # pragma: no cover
    from landscape.directions import Directions


class SurfaceEvaluator:
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
        mode: ``"auto"``, ``"eager"``, ``"compiled"`` or ``"vmap"`` (see
            :mod:`landscape.evaluate.paths`).
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
            :mod:`landscape.evaluate.paths.chunks`), kept only where the outputs are bitwise
            those of the batch-by-batch forward, so the values never depend on the probe;
            ``batch_size`` without a probe for one of several MPI ranks. Metrics and standard
            errors are always per nominal batch of ``batch_size``. The choice and the probe's
            timings are in ``provenance["execution"]`` (``forward_chunk``,
            ``forward_chunk_choice``, ``forward_chunk_probe``).
        probe_vmap: whether ``mode="auto"`` measures ``vmap`` against eager at construction
            (with ``bn_mode="eval"``, one process): None (default) on CUDA only, True on any
            device, False never.
        probes: thresholds and clock of the timing probes run at construction
            (:class:`~landscape.evaluate.spec.ProbeSettings`; default: its defaults, passes of
            at most 0.25 s timed whole, no probe beyond 5 s per batch, fast paths kept where
            at least 10% faster, on :class:`~landscape.evaluate.paths.PassTimer`).
        output_budget: bytes of model outputs the eager and compiled loops keep before the
            metrics of those points are computed together (default 64 MiB; 0: point by
            point). The values do not depend on it.

    Per-point values are deterministic: the same coordinates give the same bits whichever
    chunk evaluates them.

    Attributes: ``spec`` (the options, a frozen
    :class:`~landscape.evaluate.spec.EvaluationSpec`), ``model`` (the evaluated model, a copy
    on ``device`` if it was moved), ``directions``, ``dir_type``, ``ndim`` (1 or 2),
    ``device``, ``dtype`` (of the model's first floating tensor), ``loss``, ``loss_name``,
    ``bn_mode``, ``batch_size``, ``mode_requested`` (the ``mode`` argument), ``mode`` (as
    chosen: ``"eager"``, ``"compiled"`` or ``"vmap"``), ``points_per_call`` (K of the chosen
    path, 1 point by point), ``model_sha256`` and ``directions_sha256`` (as in the provenance).
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
        probe_vmap: bool | None = None,
        probes: ProbeSettings | None = None,
        output_budget: int = OUTPUT_BUDGET,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        self.spec = spec = EvaluationSpec(
            loss=loss,
            bn_mode=bn_mode,
            batch_size=batch_size,
            subset=subset,
            subset_seed=subset_seed,
            test_subset=test_subset,
            mode=mode,
            points_per_call=points_per_call,
            forward_chunk=forward_chunk,
            probe_vmap=probe_vmap,
            probes=ProbeSettings() if probes is None else probes,
            output_budget=output_budget,
        )
        self.ndim = 1 if directions.y is None else 2
        found = model_device(model)
        self.device = found if device is None else torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        if found != self.device:
            model = copy.deepcopy(model).to(self.device)
        self.model = model
        self.dtype = model_dtype(model)
        self.directions = directions
        self.dir_type = directions.dir_type
        self.loss, self.loss_name, self.bn_mode = loss, spec.loss_name, bn_mode
        self.batch_size, self.mode_requested = batch_size, mode

        options = dict(
            subset_seed=subset_seed,
            device=self.device,
            dtype=self.dtype,
            loss=loss,
            batch_size=batch_size,
        )
        self._sets = [EvalSet.load("train", data, subset=subset, **options)]
        if test_data is not None:
            self._sets.append(EvalSet.load("test", test_data, subset=test_subset, **options))
        train_batches = [inputs for inputs, _ in self._sets[0].batches]
        self._weights = MovedWeights(
            model,
            directions,
            self.ndim,
            self.device,
            recompute=train_batches if bn_mode == "recompute" else None,
        )
        stat_dtype = torch.float32 if self.device.type == "mps" else torch.float64
        self._metrics = Metrics(loss, batch_size, self._sets, stat_dtype)
        self._center = CenterCheck(self._weights, self._sets, loss, bn_mode == "recompute")
        self._provenance = Provenance(spec, model, directions, self._sets, self.device, self.dtype)
        self.model_sha256 = self._provenance.model_sha256
        self.directions_sha256 = self._provenance.directions_sha256
        chooser = PathChooser(spec, self._weights, self._sets, self._metrics, self.dtype)
        self._path = chooser.choose()
        self._notes = chooser.notes

    # ----------------------------------------------------------------- what it chose

    @property
    def mode(self) -> str:
        """The evaluation mode chosen at construction: ``"eager"``, ``"compiled"`` or
        ``"vmap"``."""
        return self._path.mode

    @property
    def points_per_call(self) -> int:
        """K: the points one call evaluates (``vmap`` and compiled K points; otherwise 1)."""
        return self._path.points_per_call

    @property
    def default_chunk_size(self) -> int:
        """Points per chunk that keep fast paths busy: K for vmap, otherwise 16."""
        return self.points_per_call if self.points_per_call > 1 else 16

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The metrics this evaluator returns, e.g. ``("train_loss", "train_acc", ...)``."""
        return self._metrics.names

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
        if self.spec.subset is not None:
            result["train"] = self.train_indices
        if len(self._sets) > 1 and self.spec.test_subset is not None:
            result["test"] = self.test_indices
        return result

    @property
    def provenance(self) -> dict[str, Any]:
        """JSON-able description of what this evaluator computes (stored with the surface)."""
        return self._provenance.describe(self.mode, self.points_per_call, self._notes)

    # ----------------------------------------------------------------- evaluation

    def evaluate_points(self, coords: np.ndarray) -> dict[str, np.ndarray]:
        """Metrics at ``coords`` ``(K, ndim)``: each metric as a float64 array ``(K,)``."""
        coords = check_coords(coords, self.ndim)
        return self._path.evaluate(coords)

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
        self._center.check(values, mode=self.mode, rtol=rtol, atol=atol)
        return values
