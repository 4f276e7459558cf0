"""Loss surfaces of any ``nn.Module`` along one or two directions (Li et al., NeurIPS 2018).

A grid point ``(a, b)`` is the model with its tensors set to ``theta0 + a * dx + b * dy``,
**recomputed from the centre** ``theta0`` at every point (never stepped incrementally): one
fused ``axpy`` into a preallocated flat buffer and one ``foreach`` copy into the model's
tensors. The evaluation data are materialised once on the device (:func:`as_tensors`); each
point is one pass over them in eval mode without gradients. Loss and accuracy are
sample-weighted means over all evaluation samples; their standard errors come from the means of
the nominal batches of ``batch_size``.

Grid convention (``docs/landscape-design.md``): 1D arrays are ``(nx,)``; 2D arrays are
``(ny, nx)`` with element ``[i, j]`` at ``(x[j], y[i])`` and flat index ``k = i * nx + j``
(what ``np.meshgrid(x, y)`` gives).

Evaluation modes of :class:`SurfaceEvaluator`:

- ``"eager"``: the plain loop (the reference twin). The forward runs in chunks of
  ``forward_chunk`` rows (see below); the outputs of a group of points (up to 64 MiB) are kept
  and their metrics computed together: per-sample losses and correctness of all their rows in
  one call, per-batch sums by reshaping, one host copy and numpy over the whole group, so the
  metric bookkeeping costs O(1) tensor ops per group of points instead of a few per batch.
- ``"compiled"``: the same loop with the forward under ``torch.compile`` (at the chunk shape;
  the last chunk is padded) and, BatchNorm being in eval mode, folded into the preceding
  conv/linear layer (:mod:`landscape._fold`); the folded weights are recomputed from the
  perturbed weights at every point and written in place, so the compiled graph is built once
  (a recompile raises). Falls back to eager with one warning when compilation fails, and
  without a warning (noted in ``provenance["execution"]["compiled_fallback"]``) when, on a model
  cheap enough to time whole passes, the compiled pass does not measure faster than the eager
  one (a compiled call costs ~0.1 ms of guards and wrapper here: more than it saves on the
  digits MLP). On such cheap models it also tries **K points per compiled call** (``vmap``
  over K stacked weight sets inside one compiled graph per evaluation set, the weights built
  from the coordinates in the graph, loss, accuracy and per-batch sums fused; K from a 32 MiB
  activation budget, at most 64, tried from 4), kept only when it is position-independent
  bitwise, agrees with the eager loop and measures >= 10% faster per point than the path
  chosen so far; then ``points_per_call`` and ``default_chunk_size`` are K.
- ``"vmap"``: ``torch.func.functional_call`` + ``vmap`` over K stacked sets of the moved
  tensors (the others, buffers included, stay unbatched), K points per forward; eval mode only.
- ``"auto"``: eager on CPU. On CUDA (``bn_mode="eval"``, one process) a probe at the centre
  checks ``vmap`` (K points per forward) against the eager loop and times both in interleaved
  rounds on a prefix of at most 1,024 training rows; ``vmap`` is taken only where it agrees
  within tolerance and measures at least 10% faster per point, else eager (timings and choice
  in ``provenance["execution"]["auto_vmap_probe"]``). Eager with ``bn_mode="recompute"`` and
  on one of several MPI ranks (which could choose differently).

Forward chunk (eager and compiled): ``forward_chunk`` rows per forward call, by default chosen
at construction by a timing probe at the centre (hill climbing from ``batch_size``: halving
while smaller activations stay in cache and save >= 10%, else doubling up to the whole set
while fewer calls do; a winner other than ``batch_size`` is confirmed against it in fresh
rounds), on whole passes for cheap models (a pass <= 0.25 s) and per sample on a prefix
otherwise; no probe for one of several MPI ranks (they would time each other's load, and
cannot agree without a collective: pass ``forward_chunk``). The chosen chunk is kept only if its
outputs equal, bit for bit, those of the batch-by-batch forward, so values never depend on it.
Measured here (one thread, shared 2-core AMD EPYC, AVX2): the digits MLP runs 1,024 rows per
call (0.29 ms per pass against 0.55 ms in batches of 128), the CIFAR ResNet-20 64 or 32 rows
(1.6-2.4 ms per sample against 2.0-3.3 ms at 128: 8 MB activations per tensor at 128), the
digits CNN stays at 128.

Measured by ``benchmarks/landscape_surface.py`` (ratio to the bare limit: one plain eager
forward per point at batch 128 over the same 1,024 samples, weights set by a plain axpy;
medians of paired per-round ratios, arms interleaved, process CPU time, one thread on a shared
2-core CPU; table in the README's "Landscape performance"): eager (with accuracy and standard
errors) 0.73 on the MLP, 0.94 on the CNN, 0.97 on ResNet-20; compiled 0.59 on the MLP (K = 64
points per compiled call), 0.61 on the CNN and 0.67 on ResNet-20; vmap 0.84-1.38 (K = 64, 5,
1): slower than eager on all three, hence eager on CPU. ``loss-landscapes`` (mean loss only,
all samples in one forward): 0.59 on the MLP (compiled / loss-landscapes 0.91 paired; eager
alone stays ~25% behind it there: the per-point cross-entropy and argmax kernels of 1,024
ten-class rows cost ~0.09 ms next to a 0.3 ms forward), 1.06 on the CNN and 2.2 on ResNet-20.
On GPUs a small model at batch 128 is launch-bound, which K points per forward may amortise,
so ``auto`` on CUDA measures ``vmap`` against eager at construction and keeps the faster one;
GPU timings are not recorded in this repository yet (the probe's are in the provenance).

Determinism: a point's value depends only on its coordinates, never on the chunk of points, the
group whose metrics are computed together, the forward chunk or the process that evaluates it
(per-sample values are row-independent and every per-batch sum reduces one contiguous row;
``vmap`` pads every chunk to the same K, and its per-point results were checked independent of
the point's position in the chunk on CPU; ``compiled`` pads the last chunk to the compiled
shape, and its K-point calls are padded to K and kept only where a check at construction finds
the same bits for the same points in another order). On CUDA, bitwise reproducibility also
needs deterministic kernels (``torch.use_deterministic_algorithms(True)``).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from landscape.directions import direction_targets

if TYPE_CHECKING:  # pragma: no cover
    from landscape.directions import Directions

__all__ = [
    "Surface",
    "SurfaceEvaluator",
    "as_tensors",
    "grid_coordinates",
    "surface_1d",
    "surface_2d",
]

LOSSES = ("crossentropy", "mse")
MODES = ("auto", "eager", "compiled", "vmap")
BN_MODES = ("eval", "recompute")
_SECOND_STAT = {"crossentropy": "acc", "mse": "mae"}
_MAX_POINTS_PER_CALL = 64
# compiled mode: K points per compiled call only where at least this many fit the budget
_MIN_COMPILED_POINTS = 4
# Forward chunks (eager and compiled): the probe times whole passes over the training samples
# when one takes at most this (seconds), otherwise a prefix; the compiled-vs-eager probe runs
# only on such cheap models.
_PROBE_MAX_PASS_SECONDS = 0.25
_PROBE_MAX_BATCH_SECONDS = 5.0  # no probe at all beyond this (one batch forward, seconds)
_MIN_FORWARD_CHUNK = 16
_PROBE_ROUNDS = 5  # best of 5, interleaved (2 for models timed on a prefix)
# A probed chunk (or the compiled pass) must take <= 90% of the time of the best so far: on a
# shared machine smaller differences are within the noise of the probe.
_PROBE_MIN_GAIN = 0.9
# Model outputs of this many bytes are kept before the metrics of those points are computed
# (in one go: O(1) tensor ops per group of points, not per batch).
_OUTPUT_BUDGET = 64 << 20
# vmap on CPU: activations of all K points of one call (measured best: K = 4 for the digits
# CNN, 6.6 MB of activations per point at batch 128; K = 64 for the digits MLP, 38 kB).
_CPU_ACTIVATION_BUDGET = 32 << 20
# mode="auto" on CUDA: eager against vmap at the centre (SurfaceEvaluator._probe_auto_vmap),
# on at most this many training rows, the eager loop over this many points, best of rounds.
_AUTO_PROBE_ROWS = 1024
_AUTO_PROBE_EAGER_POINTS = 4
_AUTO_PROBE_ROUNDS = 3
# (rtol, atol) of vmap against eager for every metric (None: any dtype not listed); cuDNN
# convolutions may run in TF32, and vmap batches them differently from the eager loop.
_AUTO_PROBE_TOLERANCE = {torch.float64: (1e-9, 1e-12), None: (1e-3, 1e-5)}
# True: the probe runs on any device (CPU too), for tests; normally CUDA only.
_AUTO_VMAP_PROBE_ANY_DEVICE = False
# (rtol, atol) of check_center per parameter dtype.
CENTER_TOLERANCE = {
    torch.float64: (1e-9, 1e-12),
    torch.float32: (1e-4, 1e-6),
    torch.float16: (1e-2, 1e-3),
    torch.bfloat16: (2e-2, 1e-3),
}


# --------------------------------------------------------------------------- Surface value


def grid_coordinates(x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
    """Coordinates ``(G, ndim)`` of a grid in flat-index order (``k = i * nx + j`` in 2D)."""
    x = np.asarray(x, dtype=np.float64)
    if y is None:
        return x.reshape(-1, 1).copy()
    xx, yy = np.meshgrid(x, np.asarray(y, dtype=np.float64))
    return np.stack([xx.ravel(), yy.ravel()], axis=1)


def _axis(name: str, values: Any) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of coordinates, got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} coordinates must be finite")
    return array


@dataclass(frozen=True)
class Surface:
    """A computed (possibly partial) loss surface.

    ``x`` ``(nx,)`` and ``y`` ``(ny,)`` (None in 1D) are float64 coordinates; every metric
    (``train_loss``, ``train_acc``, ``train_loss_se``, ..., or ``train_mae`` for regression)
    is a float64 array of the grid shape (``(nx,)`` or ``(ny, nx)``, element ``[i, j]`` at
    ``(x[j], y[i])``), NaN where not done; accuracy is a fraction in [0, 1]. ``done`` is a
    bool mask of the grid shape and ``provenance`` a JSON-able dict. ``sample_indices`` maps an
    evaluation set (``"train"``, ``"test"``) to the int64 indices of the samples evaluated
    when a subset of it was used (stored as ``train_indices`` / ``test_indices`` in HDF5);
    empty when every sample was.
    """

    x: np.ndarray
    y: np.ndarray | None
    metrics: dict[str, np.ndarray]
    done: np.ndarray
    provenance: dict[str, Any] = field(default_factory=dict)
    sample_indices: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        x = _axis("x", self.x)
        y = None if self.y is None else _axis("y", self.y)
        shape = (x.size,) if y is None else (y.size, x.size)
        metrics = {}
        for name, values in self.metrics.items():
            array = np.asarray(values, dtype=np.float64)
            if array.shape != shape:
                raise ValueError(f"metric {name!r} has shape {array.shape}, grid is {shape}")
            metrics[name] = array
        done = np.asarray(self.done, dtype=bool)
        if done.shape != shape:
            raise ValueError(f"done has shape {done.shape}, grid is {shape}")
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "metrics", metrics)
        object.__setattr__(self, "done", done)
        object.__setattr__(self, "provenance", dict(self.provenance))
        indices = {}
        for name, values in dict(self.sample_indices or {}).items():
            array = np.asarray(values)
            if array.ndim != 1 or not (array.size == 0 or np.issubdtype(array.dtype, np.integer)):
                raise ValueError(
                    f"sample_indices[{name!r}] must be a 1-D integer array, got "
                    f"{array.dtype} {array.shape}"
                )
            indices[str(name)] = array.astype(np.int64)
        object.__setattr__(self, "sample_indices", indices)

    @property
    def train_indices(self) -> np.ndarray | None:
        """Indices of the evaluated training samples when a subset was used, else None."""
        return self.sample_indices.get("train")

    @property
    def test_indices(self) -> np.ndarray | None:
        """Indices of the evaluated test samples when a test subset was used, else None."""
        return self.sample_indices.get("test")

    @property
    def shape(self) -> tuple[int, ...]:
        """``(nx,)`` or ``(ny, nx)``."""
        return (self.x.size,) if self.y is None else (self.y.size, self.x.size)

    @property
    def ndim(self) -> int:
        """1 or 2."""
        return 1 if self.y is None else 2

    def coordinates(self) -> np.ndarray:
        """``(G, ndim)`` coordinates in flat-index order."""
        return grid_coordinates(self.x, self.y)


# --------------------------------------------------------------------------- data


def _is_tensor_like(value: Any) -> bool:
    return isinstance(value, (Tensor, np.ndarray))


def _resolve_indices(size: int, subset: Any, subset_seed: int) -> np.ndarray:
    if size == 0:
        raise ValueError("the evaluation data are empty")
    if subset is None:
        return np.arange(size, dtype=np.int64)
    if isinstance(subset, (int, np.integer)) and not isinstance(subset, bool):
        if not 1 <= subset <= size:
            raise ValueError(f"subset must be between 1 and the data size {size}, got {subset}")
        generator = torch.Generator().manual_seed(int(subset_seed))
        chosen = torch.randperm(size, generator=generator)[: int(subset)]
        return np.sort(chosen.numpy()).astype(np.int64)
    indices = np.asarray(subset)
    if indices.ndim != 1 or indices.size == 0 or not np.issubdtype(indices.dtype, np.integer):
        raise ValueError("subset must be an int or a non-empty 1-D sequence of integer indices")
    if indices.min() < 0 or indices.max() >= size:
        raise ValueError(f"subset indices must lie in [0, {size}), got {indices.min()}..")
    return indices.astype(np.int64)


def _collate_items(dataset: Any, indices: np.ndarray, collate_fn: Callable) -> tuple:
    inputs, targets = [], []
    for start in range(0, indices.size, 1024):
        items = []
        for index in indices[start : start + 1024]:
            item = dataset[int(index)]
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise TypeError("dataset items must be (input, target) pairs")
            items.append(item)
        batch_inputs, batch_targets = collate_fn(items)
        inputs.append(torch.as_tensor(batch_inputs))
        targets.append(torch.as_tensor(batch_targets))
    return torch.cat(inputs), torch.cat(targets)


def as_tensors(
    data: Any,
    *,
    subset: int | Sequence[int] | np.ndarray | None = None,
    subset_seed: int = 0,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor, np.ndarray]:
    """Materialise evaluation data once on ``device``: ``(inputs, targets, indices)``.

    ``data`` is an ``(inputs, targets)`` pair of tensors or arrays, a map-style ``Dataset`` of
    ``(input, target)`` items (a ``TensorDataset`` is sliced directly), or a ``DataLoader``
    (its dataset is read item by item with the loader's ``collate_fn``, ignoring its sampler
    and batch size; an iterable-style loader is iterated once). Whatever the dataset's
    transforms produce is taken as is: pass data without augmentation.

    ``subset``: None for all samples; an int ``k`` for a random subset of size ``k`` drawn
    with ``torch.randperm`` on a CPU generator seeded with ``subset_seed`` (returned sorted);
    or explicit indices. ``indices`` (int64, into ``data``) says which samples were taken, in
    the order they are evaluated. Empty data raise ``ValueError``. Dtypes are kept.
    """
    from torch.utils.data import (
        DataLoader,
        Dataset,
        IterableDataset,
        TensorDataset,
        default_collate,
    )

    device = torch.device("cpu") if device is None else torch.device(device)
    collate_fn = default_collate
    if isinstance(data, DataLoader):
        collate_fn = data.collate_fn or default_collate
        if isinstance(data.dataset, IterableDataset) or not hasattr(data.dataset, "__len__"):
            inputs, targets = [], []
            for batch in data:
                if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                    raise TypeError("DataLoader batches must be (inputs, targets) pairs")
                inputs.append(torch.as_tensor(batch[0]))
                targets.append(torch.as_tensor(batch[1]))
            if not inputs:
                raise ValueError("the evaluation data are empty")
            data = (torch.cat(inputs), torch.cat(targets))
        else:
            data = data.dataset
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(map(_is_tensor_like, data)):
        inputs, targets = (torch.as_tensor(part) for part in data)
        if inputs.ndim == 0 or targets.ndim == 0 or len(inputs) != len(targets):
            raise ValueError(
                f"inputs and targets need the same first dimension, got {tuple(inputs.shape)} "
                f"and {tuple(targets.shape)}"
            )
        indices = _resolve_indices(len(inputs), subset, subset_seed)
        take = torch.from_numpy(indices)
        whole = indices.size == len(inputs) and np.array_equal(indices, np.arange(len(inputs)))
        if not whole:
            inputs, targets = inputs[take], targets[take]
    elif isinstance(data, TensorDataset) and len(data.tensors) == 2:
        indices = _resolve_indices(len(data), subset, subset_seed)
        take = torch.from_numpy(indices)
        inputs, targets = data.tensors[0][take], data.tensors[1][take]
    elif isinstance(data, Dataset) or (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        indices = _resolve_indices(len(data), subset, subset_seed)
        inputs, targets = _collate_items(data, indices, collate_fn)
    else:
        raise TypeError(
            "data must be an (inputs, targets) pair, a Dataset or a DataLoader, "
            f"got {type(data).__name__}"
        )
    return inputs.to(device), targets.to(device), indices


@dataclass
class _EvalSet:
    """One materialised evaluation set split into contiguous batches."""

    name: str
    inputs: Tensor
    targets: Tensor
    indices: np.ndarray
    bounds: list[tuple[int, int]]
    sizes: np.ndarray  # float64 batch sizes
    batches: list[tuple[Tensor, Tensor]]  # (inputs, targets) views, one per batch
    # Forward chunks: contiguous (start, stop) rows per forward call (the nominal batches by
    # default; smaller or larger when the timing probe measured it faster). Statistics are
    # always per nominal batch (``bounds``).
    chunks: list[tuple[int, int]] = field(default_factory=list)
    chunk_inputs: list[Tensor] = field(default_factory=list)  # input views, one per chunk
    padded: list[Tensor] = field(default_factory=list)  # compiled mode: chunks of fixed shape
    repeated_targets: dict[int, Tensor] = field(default_factory=dict)  # K -> targets K times

    def set_chunk(self, chunk: int) -> None:
        """Forward ``chunk`` rows per call."""
        size = len(self.inputs)
        self.chunks = [(start, min(start + chunk, size)) for start in range(0, size, chunk)]
        self.chunk_inputs = [self.inputs[start:stop] for start, stop in self.chunks]
        self.padded = []

    def targets_times(self, count: int) -> Tensor:
        """The targets repeated ``count`` times along dim 0 (for ``count`` points at once)."""
        if count == 1:
            return self.targets
        cached = self.repeated_targets.get(count)
        if cached is None:
            if len(self.repeated_targets) >= 8:
                self.repeated_targets.clear()
            repeats = (count,) + (1,) * (self.targets.ndim - 1)
            cached = self.repeated_targets[count] = self.targets.repeat(repeats)
        return cached


# --------------------------------------------------------------------------- helpers


def _model_device(model: nn.Module) -> torch.device:
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _model_dtype(model: nn.Module) -> torch.dtype:
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.get_default_dtype()


def _tensor_bytes(tensor: Tensor) -> bytes:
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes()


def _hash_tensors(items: Sequence[tuple[str, Tensor]]) -> str:
    digest = hashlib.sha256()
    for name, tensor in items:
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(_tensor_bytes(tensor))
    return digest.hexdigest()


def _hash_indices(indices: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(indices, dtype="<i8").tobytes()).hexdigest()


def _package_version() -> str:
    try:
        from importlib.metadata import version

        return version("samlab-toolkit")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return "unknown"


def standard_error(batch_sums: np.ndarray, batch_sizes: np.ndarray) -> float:
    """Standard error of a sample-weighted mean from per-batch sums and sizes.

    With batch means ``m_b = s_b / n_b``, weights ``w_b = n_b / N`` and the mean
    ``M = sum_b s_b / N``: ``SE^2 = B / (B - 1) * sum_b w_b^2 (m_b - M)^2`` over ``B`` batches,
    which for equal batches is ``std(m, ddof=1) / sqrt(B)``. NaN for a single batch.
    """
    sums = np.asarray(batch_sums, dtype=np.float64)
    return float(_standard_errors(sums.reshape(1, -1), batch_sizes)[0])


def _standard_errors(batch_sums: np.ndarray, batch_sizes: np.ndarray) -> np.ndarray:
    """:func:`standard_error` of every row of ``batch_sums`` ``(..., B)`` (one reduction per
    row over the contiguous last axis, so a row's value does not depend on the other rows)."""
    sums = np.ascontiguousarray(batch_sums, dtype=np.float64)
    sizes = np.asarray(batch_sizes, dtype=np.float64)
    count = sizes.size
    if count < 2:
        return np.full(sums.shape[:-1], math.nan)
    total = sizes.sum()
    means = sums / sizes
    mean = sums.sum(axis=-1, keepdims=True) / total
    weights = sizes / total
    return np.sqrt(count / (count - 1) * np.sum(weights**2 * (means - mean) ** 2, axis=-1))


@dataclass
class _Group:
    """The moved tensors of one dtype as flat centre and direction vectors on the device."""

    names: list[str]
    tensors: list[Tensor]
    shapes: list[torch.Size]
    numels: list[int]
    center: Tensor
    dx: Tensor
    dy: Tensor | None
    buffer: Tensor | None = None  # the flat weights of the current point
    buffer_views: list[Tensor] = field(default_factory=list)  # per-tensor views of buffer
    center_views: list[Tensor] = field(default_factory=list)  # per-tensor views of center

    def views(self, flat: Tensor) -> list[Tensor]:
        """Per-tensor views of ``flat`` (``(P,)`` or ``(K, P)``)."""
        lead = flat.shape[:-1]
        return [
            part.reshape(lead + shape)
            for part, shape in zip(flat.split(self.numels, dim=-1), self.shapes)
        ]


# --------------------------------------------------------------------------- evaluator


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
        mode: ``"auto"``, ``"eager"``, ``"compiled"`` or ``"vmap"`` (see the module docstring).
        device: evaluation device, by default the model's.
        points_per_call: K of ``vmap`` (points per forward), at most 64 by default: on CUDA
            as many points as fit in half the free GPU memory (activations of one batch, measured
            with forward hooks, plus two copies of the moved weights per point); on CPU as many
            as keep one call's activations within 32 MiB (by measurement, cache-sized calls
            are the fastest).
        forward_chunk: samples per forward call of ``eager`` and ``compiled`` (any positive
            number, at most the largest data set; the outputs of the chunks are concatenated).
            ``None`` (default): chosen at construction by a timing probe at the centre
            (``batch_size`` halved or doubled while it measures at least 10% faster; see the
            module docstring), kept only where the outputs are bitwise those of the
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

    def _build_groups(self, directions: Any) -> list[_Group]:
        targets = direction_targets(self.model, self.dir_type)
        sources = [("x", directions.x)] + ([("y", directions.y)] if self.ndim == 2 else [])
        for label, mapping in sources:
            for name, tensor in mapping.items():
                if name not in targets:
                    raise ValueError(
                        f"direction {label} names {name!r}, which is not a "
                        f"{self.dir_type!r} tensor of the model (directions from another "
                        "architecture, or the wrong dir_type?)"
                    )
                if tuple(tensor.shape) != tuple(targets[name].shape):
                    raise ValueError(
                        f"direction {label}[{name!r}] has shape {tuple(tensor.shape)}, the "
                        f"model's tensor {tuple(targets[name].shape)}"
                    )
        by_dtype: dict[torch.dtype, dict[str, list]] = {}
        for name, target in targets.items():
            dx = directions.x.get(name)
            dy = directions.y.get(name) if self.ndim == 2 else None
            moved = (dx is not None and bool(torch.any(dx != 0))) or (
                dy is not None and bool(torch.any(dy != 0))
            )
            if not moved:
                continue
            group = by_dtype.setdefault(
                target.dtype, {"names": [], "tensors": [], "dx": [], "dy": []}
            )
            group["names"].append(name)
            group["tensors"].append(target)
            zeros = torch.zeros(target.shape)
            group["dx"].append(zeros if dx is None else dx)
            group["dy"].append(zeros if dy is None else dy)
        if not by_dtype:
            warnings.warn("every direction is zero: the surface is flat", stacklevel=3)
        groups = []
        for dtype, group in by_dtype.items():

            def flat(parts: list[Tensor], dtype: torch.dtype = dtype) -> Tensor:
                return torch.cat(
                    [p.detach().reshape(-1).to(device=self.device, dtype=dtype) for p in parts]
                )

            tensors = group["tensors"]
            new = _Group(
                names=group["names"],
                tensors=tensors,
                shapes=[t.shape for t in tensors],
                numels=[t.numel() for t in tensors],
                center=flat(tensors).clone(),
                dx=flat(group["dx"]),
                dy=flat(group["dy"]) if self.ndim == 2 else None,
            )
            new.buffer = torch.empty_like(new.center)
            new.buffer_views = new.views(new.buffer)
            new.center_views = new.views(new.center)
            groups.append(new)
        return groups

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _pass_seconds(
        self, passes: dict[Any, Callable[[], Any]], rounds: int = _PROBE_ROUNDS
    ) -> dict[Any, float]:
        """Best-of-rounds seconds of each callable (rounds interleaved and rotated): the
        calling thread's CPU time when it does all the work (CPU, one intra-op thread; not
        disturbed by other processes holding the core), else wall time."""
        one_thread = self.device.type == "cpu" and torch.get_num_threads() == 1
        clock = time.thread_time if one_thread else time.perf_counter
        keys = list(passes)
        best = dict.fromkeys(keys, math.inf)
        for round_index in range(rounds):
            shift = round_index % len(keys)
            for key in keys[shift:] + keys[:shift]:
                self._sync()
                tic = clock()
                passes[key]()
                self._sync()
                best[key] = min(best[key], clock() - tic)
        return best

    def _setup_forward_chunks(self, requested: int | None) -> None:
        """Samples per forward call: ``requested``, or the timing probe's choice."""
        largest = max(len(s.inputs) for s in self._sets)
        ranks = _launched_ranks()
        if requested is not None:
            chunk, choice = min(requested, largest), "requested"
        elif ranks > 1:
            # Each rank would time its forward while the others load the same machine, and
            # the ranks cannot agree without a collective: no probe (forward_chunk chooses).
            chunk = self.batch_size
            choice = f"batch by batch, no probe: one of {ranks} MPI ranks"
        else:
            chunk, choice = self._probe_forward_chunk(largest)
        for evalset in self._sets:
            evalset.set_chunk(chunk)
        self._notes["forward_chunk"] = chunk
        self._notes["forward_chunk_choice"] = choice

    def _probe_forward_chunk(self, largest: int) -> tuple[int, str]:
        """The forward chunk that measures fastest at the centre, by hill climbing from the
        batch size: halving it (smaller activations stay in cache), or else doubling it up to
        the whole set (fewer calls), each step taken only while the candidate saves at least
        ``1 - _PROBE_MIN_GAIN`` of the time of the best so far, timed against it in
        interleaved rounds (cheap models on whole passes over the training samples, others
        per sample on a prefix). The winner is kept only if its outputs equal,
        bit for bit, those of the batch-by-batch forward (every row of every evaluation set
        for cheap models; otherwise the first two chunks and the last one of each set), so
        the values never depend on the choice."""
        batch = self.batch_size
        model = self.model
        train = self._sets[0]
        size = len(train.inputs)
        try:
            with self._prepared(), torch.no_grad():
                first = train.batches[0][0]
                out = model(first)
                if not isinstance(out, Tensor) or out.shape[:1] != first.shape[:1]:
                    return batch, "batch by batch: the outputs are not one tensor row per sample"
                seconds = self._pass_seconds({0: lambda: model(first)}, rounds=2)[0]
                self._probe_batch_seconds = seconds
                if seconds > _PROBE_MAX_BATCH_SECONDS:
                    return batch, f"batch by batch, no probe: one batch takes {seconds:.1f} s"
                cheap = seconds * len(train.bounds) <= _PROBE_MAX_PASS_SECONDS
                self._probe_cheap = cheap
                rounds = _PROBE_ROUNDS if cheap else 2

                def per_sample(chunks: dict[int, None]) -> dict[int, float]:
                    """Seconds per sample of forwards in each chunk size (interleaved)."""
                    rows = {
                        c: train.inputs if cheap else train.inputs[: max(c, batch)] for c in chunks
                    }
                    timed = self._pass_seconds(
                        {
                            c: lambda c=c: [model(x) for x in torch.split(rows[c], c)]
                            for c in chunks
                        },
                        rounds,
                    )
                    return {c: timed[c] / len(rows[c]) for c in chunks}

                timings: dict[int, float] = {}
                best = batch
                for step in (0.5, 2.0):
                    if best != batch:  # smaller chunks won (cache): larger ones will not
                        break
                    chunk = batch
                    while True:
                        chunk = min(int(chunk * step), largest)
                        if chunk < _MIN_FORWARD_CHUNK or chunk in timings or chunk == best:
                            break
                        # the candidate against the best so far, in interleaved rounds
                        pair = per_sample({best: None, chunk: None})
                        for key, value in pair.items():
                            timings[key] = min(timings.get(key, math.inf), value)
                        if pair[chunk] > _PROBE_MIN_GAIN * pair[best]:
                            break
                        best = chunk
                choice = "probe"
                if best != batch:
                    # confirm against the batch size in fresh interleaved rounds: on a loaded
                    # machine one lucky round can make a slower chunk look faster
                    pair = per_sample({batch: None, best: None})
                    confirmed = pair[best] <= _PROBE_MIN_GAIN * pair[batch]
                    self._notes["forward_chunk_confirm"] = {
                        "unit": "ms per pass" if cheap else "ms per sample",
                        **{
                            str(c): round(t * (size if cheap else 1) * 1e3, 4)
                            for c, t in pair.items()
                        },
                        "kept": confirmed,
                    }
                    if not confirmed:
                        best = batch
                if best != batch and not self._same_outputs(best, full=cheap):
                    self._notes["forward_chunk_not_bitwise"] = best
                    best, choice = batch, "probe; the faster chunk changed the outputs' bits"
        except Exception as error:  # noqa: BLE001 - the probe is an optimisation only
            message = f"batch by batch: the probe failed ({type(error).__name__}: {error})"
            return batch, message[:300]
        scale = size if cheap else 1
        unit = "ms per pass" if cheap else "ms per sample"
        self._notes["forward_chunk_probe"] = {
            "unit": unit,
            **{str(c): round(t * scale * 1e3, 4) for c, t in sorted(timings.items())},
        }
        return best, choice

    def _same_outputs(self, chunk: int, full: bool) -> bool:
        """Whether forward chunks of ``chunk`` rows give the batch-by-batch outputs bitwise:
        on every row (``full``), or on the first two chunks and the last one of each set."""
        model, batch = self.model, self.batch_size
        for evalset in self._sets:
            size = len(evalset.inputs)
            starts = list(range(0, size, chunk))
            if not full:
                starts = sorted({*starts[:2], starts[-1]})
            for start in starts:
                stop = min(start + chunk, size)
                got = model(evalset.inputs[start:stop])
                first = start // batch * batch
                nominal = torch.cat(
                    [
                        model(evalset.inputs[b : min(b + batch, size)])
                        for b in range(first, stop, batch)
                    ]
                )
                if not torch.equal(got, nominal[start - first : stop - first]):
                    return False
        return True

    def _setup_compiled(self) -> None:
        from landscape._fold import fold_batchnorm

        first = self._sets[0]
        chunk = first.chunks[0][1] - first.chunks[0][0]
        compiled_batch = min(chunk, max(len(s.inputs) for s in self._sets))
        try:
            if self.device.type == "cpu" and not _cxx_available():
                raise RuntimeError("no C++ compiler found (install g++ or set CXX)")
            with self._prepared(), torch.no_grad():
                folded = fold_batchnorm(self.model, first.inputs[:compiled_batch])
                compiled = torch.compile(folded.module, dynamic=False)
                for evalset in self._sets:
                    evalset.padded = [
                        _pad_rows(inputs, compiled_batch) for inputs in evalset.chunk_inputs
                    ]
                probe = first.padded[0]
                expected = self.model(probe)
                got = compiled(probe)
                if not _outputs_close(got, expected):
                    raise RuntimeError("the compiled forward disagrees with the model")
        except Exception as error:  # noqa: BLE001 - any failure falls back to eager
            warnings.warn(
                f"mode='compiled' is not available here ({type(error).__name__}: {error}); "
                "evaluating in eager mode instead",
                RuntimeWarning,
                stacklevel=3,
            )
            for evalset in self._sets:
                evalset.padded = []
            self.mode = "eager"
            self._notes["compile_error"] = f"{type(error).__name__}: {error}"[:500]
            return
        self._folded = folded
        self._compiled = compiled
        self._notes["batchnorm_folded"] = folded.num_folded
        if folded.reason:
            self._notes["batchnorm_fold_note"] = folded.reason[:500]
        self._probe_compiled()

    def _probe_compiled(self) -> None:
        """On a model cheap enough for the chunk probe, keep ``compiled`` only where one pass
        over the training samples measures faster than the eager one (tiny models lose to
        the compiled call's own overhead); otherwise fall back to eager, noted in provenance."""
        if not self._probe_cheap:
            return
        first = self._sets[0]
        model, compiled, folded = self.model, self._compiled, self._folded

        def eager_pass() -> None:
            for inputs in first.chunk_inputs:
                model(inputs)

        def compiled_pass() -> None:
            folded.refresh()
            with _fail_on_recompile():
                for padded in first.padded:
                    compiled(padded)

        with self._prepared(), torch.no_grad():
            timings = self._pass_seconds({"eager": eager_pass, "compiled": compiled_pass})
        self._notes["compiled_probe_ms"] = {k: round(v * 1e3, 3) for k, v in timings.items()}
        if timings["compiled"] > _PROBE_MIN_GAIN * timings["eager"]:
            self._notes["compiled_fallback"] = (
                f"eager: the compiled pass measured {timings['compiled'] * 1e3:.3g} ms, the "
                f"eager pass {timings['eager'] * 1e3:.3g} ms"
            )
            self.mode = "eager"
            self._compiled = self._folded = None
            for evalset in self._sets:
                evalset.padded = []

    def _setup_compiled_points(self) -> None:
        """Compiled mode on a cheap model: also try K grid points per compiled call (``vmap``
        over K stacked sets of the moved tensors inside ``torch.compile``, loss, accuracy and
        per-batch sums in the same graph), and keep it where it measures faster per point
        than the path chosen so far (eager or the compiled forward). Small models are
        overhead- and launch-bound on CPU: one call for K points amortises the per-call cost,
        and the statistics are fused instead of a few kernels per point."""
        if not self._probe_cheap or self.bn_mode != "eval" or not isinstance(self.loss, str):
            return
        if self.device.type == "cpu" and not _cxx_available():
            return
        rows = sum(len(s.inputs) for s in self._sets)
        per_point = self._activation_bytes() * rows / max(1, self.batch_size)
        budget = _CPU_ACTIVATION_BUDGET if self.device.type == "cpu" else _CPU_ACTIVATION_BUDGET * 8
        width = int(min(_MAX_POINTS_PER_CALL, budget // max(1.0, per_point)))
        if width < _MIN_COMPILED_POINTS:
            self._notes["compiled_points"] = f"not tried: {width} point(s) per call fit"
            return
        try:
            functions = [
                torch.compile(self._points_function(evalset), dynamic=False)
                for evalset in self._sets
            ]
            coords = np.zeros((width, self.ndim))
            coords[:, 0] = np.linspace(-0.5, 0.5, width)
            if self.ndim == 2:
                coords[:, 1] = np.linspace(0.25, -0.25, width)
            with self._prepared(), torch.no_grad():
                got = self._compiled_point_stats(coords, functions, first=True)
                # position independence: the same points in another order, same bits
                order = np.roll(np.arange(width), width // 2)
                rolled = self._compiled_point_stats(coords[order], functions)
            if not np.array_equal(rolled, got[order], equal_nan=True):
                self._notes["compiled_points"] = (
                    "not used: a point's values depended on its position in the call"
                )
                return
            expected = self._eager_point_stats(coords[:2])
            scale = 1.0 + np.abs(expected)
            tol = 1e-9 if self.dtype == torch.float64 else 1e-4
            if not np.all(np.abs(got[:2] - expected) <= tol * scale):
                raise RuntimeError("the compiled K-point evaluation disagrees with the model")
        except Exception as error:  # noqa: BLE001 - an optimisation only
            self._notes["compiled_points"] = f"not used: {type(error).__name__}: {error}"[:500]
            return
        current = self.mode
        one = coords[:1]

        def per_point_current() -> None:
            self.evaluate_points(np.repeat(one, width, axis=0))

        def per_call_points() -> None:
            self._compiled_point_stats(coords, functions)

        with self._prepared(), torch.no_grad():
            timings = self._pass_seconds(
                {current: per_point_current, "points": per_call_points}, rounds=3
            )
        self._notes["compiled_points_probe_ms_per_point"] = {
            key: round(value * 1e3 / width, 4) for key, value in timings.items()
        }
        if timings["points"] > _PROBE_MIN_GAIN * timings[current]:
            self._notes["compiled_points"] = f"not used: {current} measured faster"
            return
        self._points_compiled = functions
        self.points_per_call = width
        self.mode = "compiled"
        self._notes["compiled_points"] = f"{width} points per compiled call"
        self._notes.pop("compiled_fallback", None)
        self._compiled = self._folded = None
        for evalset in self._sets:
            evalset.padded = []

    def _points_function(self, evalset: _EvalSet) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
        """``f(points, inputs, targets)`` -> per-batch sums ``(K, n_batches, n_stats)`` at
        the K points ``theta0 + a[k] dx (+ b[k] dy)`` (``points`` float64 ``(K, ndim)``)."""
        from torch.func import functional_call, vmap

        model, groups = self.model, self._groups
        batch, size = self.batch_size, len(evalset.inputs)
        full = size // batch
        stat_dtype = self._stat_dtype
        fast_ce = self.loss == "crossentropy" and _class_indices(evalset.targets, None)
        if fast_ce:
            with self._prepared(), torch.no_grad():
                classes = self.model(evalset.inputs[:1]).shape
            fast_ce = len(classes) == 2 and _class_indices(evalset.targets, classes[1])
        per_sample = _fast_cross_entropy_stats if fast_ce else self._per_sample

        def sums(values: Tensor) -> Tensor:  # (S, N) -> (n_batches, S)
            head = values[:, : full * batch].reshape(values.shape[0], full, batch)
            head = head.sum(-1, dtype=stat_dtype)
            if full * batch != size:
                tail = values[:, full * batch :].sum(-1, dtype=stat_dtype, keepdim=True)
                head = torch.cat([head, tail], dim=1) if full else tail
            return head.t()

        def function(points: Tensor, inputs: Tensor, targets: Tensor) -> Tensor:
            tensors: dict[str, Tensor] = {}
            for group in groups:
                coords = points.to(group.center.dtype)
                flat = group.center + coords[:, :1] * group.dx
                if group.dy is not None:
                    flat = flat + coords[:, 1:2] * group.dy
                tensors.update(zip(group.names, group.views(flat)))

            def one(moved: dict[str, Tensor]) -> Tensor:
                outputs = functional_call(model, moved, (inputs,))
                return sums(per_sample(outputs, targets))

            return vmap(one)(tensors)

        return function

    def _compiled_point_stats(
        self,
        coords: np.ndarray,
        functions: list[Callable[..., Tensor]] | None = None,
        first: bool = False,
    ) -> np.ndarray:
        """Per-batch sums ``(K, n_batches, n_stats)`` of K points in one compiled call per
        evaluation set (K = the compiled width; one host sync). A recompile raises, except on
        the ``first`` call (which compiles)."""
        import contextlib

        functions = self._points_compiled if functions is None else functions
        # one fresh (K, ndim) tensor: views of one array as separate inputs would alias
        points = torch.tensor(coords, dtype=torch.float64, device=self.device)
        with contextlib.nullcontext() if first else _fail_on_recompile():
            parts = [
                function(points, evalset.inputs, evalset.targets)
                for function, evalset in zip(functions, self._sets)
            ]
        stats = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        return stats.cpu().numpy().astype(np.float64, copy=False)

    def _eager_point_stats(self, coords: np.ndarray) -> np.ndarray:
        """Per-batch sums ``(K, n_batches, n_stats)`` by the eager loop (the reference)."""
        with self._prepared(), torch.no_grad():
            rows = []
            for coord in coords:
                self._set_point(coord)
                pending = [
                    [
                        [_unaliased(self.model(x), self._storages) for x in s.chunk_inputs]
                        for s in self._sets
                    ]
                ]
                rows.append(self._outputs_stats(pending)[0])
        return np.stack(rows)

    def _setup_vmap(self, strict: bool) -> None:
        if self.bn_mode != "eval":
            raise ValueError("mode='vmap' needs bn_mode='eval' (use eager or compiled)")
        try:
            self.points_per_call = self._choose_points_per_call()
            probe = np.zeros((min(2, self.points_per_call), self.ndim))
            with self._prepared(), torch.no_grad():
                inputs, targets = self._sets[0].batches[0]
                stats = self._vmap_batch_stats(self._stacked(probe), inputs, targets)
                expected = self._batch_stats(self.model(inputs), targets)
            if not torch.allclose(stats[0], expected, rtol=1e-3, atol=1e-5):
                raise RuntimeError("vmap evaluation disagrees with the model's own forward")
        except Exception as error:
            if strict:
                raise RuntimeError(
                    f"mode='vmap' cannot evaluate this model ({type(error).__name__}: {error}); "
                    "use mode='eager'"
                ) from error
            warnings.warn(
                f"vmap evaluation is not available for this model ({error}); using eager mode",
                RuntimeWarning,
                stacklevel=3,
            )
            self.mode = "eager"
            self.points_per_call = 1
            self._notes["vmap_error"] = f"{type(error).__name__}: {error}"[:500]

    def _probe_auto_vmap(self) -> None:
        """``mode="auto"`` on CUDA: keep eager, or switch to ``vmap`` where it measures faster.

        At the centre, on a prefix of the training samples (at most ``_AUTO_PROBE_ROWS``
        rows, whole nominal batches), K points by one ``vmap`` call are checked against the
        eager loop (every metric of every point within ``_AUTO_PROBE_TOLERANCE``), then the
        eager loop over ``_AUTO_PROBE_EAGER_POINTS`` points and the K-point call are timed in
        ``_AUTO_PROBE_ROUNDS`` interleaved rounds (best of them, per point). ``vmap`` is kept
        only where it agrees and takes at most ``_PROBE_MIN_GAIN`` of the eager time per
        point. One of several MPI ranks does not probe (the ranks could choose differently,
        and could not agree without a collective): eager. Timings and choice are in
        ``provenance["execution"]["auto_vmap_probe"]``."""
        ranks = _launched_ranks()
        if ranks > 1:
            self._notes["auto_vmap_probe"] = {
                "choice": "eager",
                "reason": f"no probe: one of {ranks} MPI ranks (pass mode='vmap' to use it)",
            }
            return
        note: dict[str, Any] = {"choice": "eager"}
        self._notes["auto_vmap_probe"] = note
        full_sets = self._sets
        try:
            width = self._choose_points_per_call()
            train = full_sets[0]
            rows = min(
                len(train.inputs), max(1, _AUTO_PROBE_ROWS // self.batch_size) * self.batch_size
            )
            self._sets = [_prefix_set(train, rows)]
            coords = np.zeros((width, self.ndim))
            eager_points = min(width, _AUTO_PROBE_EAGER_POINTS)
            note.update(points_per_call=width, rows=rows, eager_points=eager_points)

            expected = self.evaluate_points(coords[:1])
            with self._prepared(), torch.no_grad():
                got = {name: np.full(width, np.nan) for name in self.metric_names}
                self._store(got, 0, self._vmap_point_stats(coords))
            rtol, atol = _AUTO_PROBE_TOLERANCE.get(self.dtype, _AUTO_PROBE_TOLERANCE[None])
            for name, values in expected.items():
                if not np.all(np.isclose(got[name], values[0], rtol, atol, equal_nan=True)):
                    note["reason"] = (
                        f"vmap disagrees with eager: {name} {float(np.max(got[name]))!r} "
                        f"vs {float(values[0])!r} (rtol={rtol}, atol={atol})"
                    )
                    return

            def eager_pass() -> None:
                self.evaluate_points(coords[:eager_points])

            def vmap_pass() -> None:
                self._vmap_point_stats(coords)

            with self._prepared(), torch.no_grad():
                timings = self._pass_seconds(
                    {"eager": eager_pass, "vmap": vmap_pass}, rounds=_AUTO_PROBE_ROUNDS
                )
            per_point = {"eager": timings["eager"] / eager_points, "vmap": timings["vmap"] / width}
            note["ms_per_point"] = {k: round(v * 1e3, 4) for k, v in per_point.items()}
            if not per_point["vmap"] <= _PROBE_MIN_GAIN * per_point["eager"]:
                note["reason"] = f"vmap is not at least {1 - _PROBE_MIN_GAIN:.0%} faster per point"
                return
        except Exception as error:  # noqa: BLE001 - an optimisation only
            note["reason"] = f"vmap not available: {type(error).__name__}: {error}"[:500]
            return
        finally:
            self._sets = full_sets
        note["choice"] = "vmap"
        note["reason"] = (
            f"vmap measured at least {1 - _PROBE_MIN_GAIN:.0%} faster per point and agrees "
            "with eager"
        )
        self.mode = "vmap"
        self.points_per_call = width

    def _choose_points_per_call(self) -> int:
        if self._requested_points_per_call is not None:
            return self._requested_points_per_call
        moved_bytes = sum(g.center.numel() * g.center.element_size() for g in self._groups)
        activation_bytes = self._activation_bytes()
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            budget, per_point = free // 2, activation_bytes + 2 * moved_bytes
        else:  # by measurement: K points' activations should stay in cache
            budget, per_point = _CPU_ACTIVATION_BUDGET, activation_bytes
        self._notes["activation_bytes_per_point"] = int(activation_bytes)
        return int(max(1, min(_MAX_POINTS_PER_CALL, budget // max(1, per_point))))

    def _activation_bytes(self) -> int:
        total = 0

        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            nonlocal total
            for tensor in _flatten_tensors(output):
                total += tensor.numel() * tensor.element_size()

        leaves = [m for m in self.model.modules() if next(m.children(), None) is None]
        handles = [m.register_forward_hook(hook) for m in leaves]
        try:
            with self._prepared(), torch.no_grad():
                self.model(self._sets[0].batches[0][0])
        finally:
            for handle in handles:
                handle.remove()
        return total

    # ----------------------------------------------------------------- public API

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
    def default_chunk_size(self) -> int:
        """Points per chunk that keep fast paths busy: K for vmap, otherwise 16."""
        return self.points_per_call if self.points_per_call > 1 else 16

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
            "train_indices_sha256": _hash_indices(self._sets[0].indices),
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
            result["test_indices_sha256"] = _hash_indices(self._sets[1].indices)
        return result

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

    # ----------------------------------------------------------------- evaluation internals

    def _prepared(self):
        return _Prepared(self)

    def _set_point(self, coord: np.ndarray) -> None:
        # theta = theta0 + a dx (+ b dy) into a preallocated flat buffer, then one foreach
        # copy into the model's tensors: three tensor calls per dtype group, no allocation.
        a = float(coord[0])
        b = float(coord[1]) if self.ndim == 2 else 0.0
        for group in self._groups:
            torch.add(group.center, group.dx, alpha=a, out=group.buffer)
            if group.dy is not None:
                group.buffer.add_(group.dy, alpha=b)
            torch._foreach_copy_(group.tensors, group.buffer_views)

    def _restore(self) -> None:
        for group in self._groups:
            torch._foreach_copy_(group.tensors, group.center_views)

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

    def _outputs_stats(self, pending: list[list[list[Any]]]) -> np.ndarray:
        """Per-batch sums ``(K, n_batches, n_stats)`` from the outputs of K points."""
        count = len(pending)
        parts = []
        for index, evalset in enumerate(self._sets):
            if isinstance(self.loss, str):
                chunks = [out for point in pending for out in point[index]]
                outputs = chunks[0] if len(chunks) == 1 else torch.cat(chunks)
                per_sample = self._per_sample(outputs, evalset.targets_times(count), eager=True)
                parts.append(self._batch_sums(per_sample, evalset, count))
                continue
            sums = []
            for point in pending:  # a callable loss: applied to each nominal batch
                outputs = point[index]
                if len(evalset.chunks) != len(evalset.bounds):
                    whole = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
                    outputs = [whole[start:stop] for start, stop in evalset.bounds]
                for out, (_, targets) in zip(outputs, evalset.batches):
                    sums.append(self._callable_sum(out, targets))
            parts.append(torch.stack(sums).reshape(1, count, len(evalset.bounds)))
        stats = parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)
        return stats.permute(1, 2, 0).cpu().numpy().astype(np.float64, copy=False)

    def _batch_sums(self, values: Tensor, evalset: _EvalSet, count: int) -> Tensor:
        """``values`` ``(S, count * N)`` (per-sample statistics of ``count`` points) summed
        per nominal batch: ``(S, count, n_batches)``. Each sum runs over a contiguous row, so a
        point's sums do not depend on ``count`` or on its position."""
        stats, size = values.shape[0], len(evalset.inputs)
        values = values.reshape(stats, count, size)
        full = size // self.batch_size
        dtype = self._stat_dtype
        head = values[:, :, : full * self.batch_size].reshape(stats, count, full, self.batch_size)
        head = head.sum(-1, dtype=dtype)
        if full * self.batch_size == size:
            return head
        tail = values[:, :, full * self.batch_size :].sum(-1, dtype=dtype, keepdim=True)
        return torch.cat([head, tail], dim=2) if full else tail

    def _stacked(self, coords: np.ndarray) -> dict[str, Tensor]:
        stacked: dict[str, Tensor] = {}
        for group in self._groups:
            a = torch.as_tensor(coords[:, 0], dtype=group.center.dtype, device=self.device)
            flat = group.center + group.dx * a[:, None]
            if group.dy is not None:
                b = torch.as_tensor(coords[:, 1], dtype=group.center.dtype, device=self.device)
                flat = flat + group.dy * b[:, None]
            stacked.update(zip(group.names, group.views(flat)))
        return stacked

    def _vmap_batch_stats(self, stacked: dict[str, Tensor], inputs: Tensor, targets: Tensor):
        from torch.func import functional_call, vmap

        def one_point(tensors: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
            return self._batch_stats(functional_call(self.model, tensors, (x,)), y)

        return vmap(one_point, in_dims=(0, None, None))(stacked, inputs, targets)

    def _vmap_point_stats(self, coords: np.ndarray) -> np.ndarray:
        """Per-batch sums ``(K, n_batches, n_stats)`` at K points (one host sync)."""
        stacked = self._stacked(coords)
        sums = [
            self._vmap_batch_stats(stacked, inputs, targets)
            for evalset in self._sets
            for inputs, targets in evalset.batches
        ]
        stats = torch.stack(sums, dim=1)
        return stats.cpu().numpy().astype(np.float64, copy=False)

    def _batch_stats(self, outputs: Any, targets: Tensor) -> Tensor:
        """Sums ``(n_stats,)`` of one batch: ``[loss_sum, second_sum]`` or ``[loss_sum]``."""
        if isinstance(self.loss, str):
            return self._per_sample(outputs, targets).sum(-1, dtype=self._stat_dtype)
        return self._callable_sum(outputs, targets).reshape(1)

    def _per_sample(self, outputs: Any, targets: Tensor, eager: bool = False) -> Tensor:
        """Per-sample ``[loss, second]`` ``(2, N)`` of a built-in loss (crossentropy: top-1
        correctness; mse: mean absolute error), averaged over any further output dims.

        ``eager`` (not under ``vmap``): class-index cross-entropy as ``logsumexp(z) - z[y]``
        and correctness from ``max(1)``'s first maximal index, the same values as
        ``F.cross_entropy`` (to rounding) and ``argmax``, about 4x cheaper on CPU for 10
        classes (``log_softmax`` over short rows and ``argmax`` are slow there)."""
        if not isinstance(outputs, Tensor):
            raise TypeError(
                f"loss={self.loss!r} needs the model to return a tensor, got "
                f"{type(outputs).__name__}; pass a callable loss"
            )
        if outputs.dtype in (torch.float16, torch.bfloat16):
            outputs = outputs.float()
        if self.loss == "crossentropy":
            if eager and outputs.ndim == 2 and _class_indices(targets, outputs.shape[1]):
                picked = outputs.gather(1, targets[:, None]).squeeze(1)
                losses = torch.logsumexp(outputs, 1) - picked
                correct = (outputs.max(1).indices == targets).to(losses.dtype)
                return torch.stack([losses, correct])
            losses = F.cross_entropy(outputs, targets, reduction="none")
            labels = targets.argmax(1) if targets.is_floating_point() else targets
            correct = (outputs.argmax(1) == labels).to(losses.dtype)
            if losses.ndim > 1:
                losses = losses.flatten(1).mean(1)
                correct = correct.flatten(1).mean(1)
            return torch.stack([losses, correct])
        count = targets.shape[0]
        if targets.shape != outputs.shape:
            if targets.numel() != outputs.numel():
                raise ValueError(
                    f"mse: targets {tuple(targets.shape)} do not match outputs "
                    f"{tuple(outputs.shape)}"
                )
            targets = targets.reshape(outputs.shape)
        difference = (outputs - targets.to(outputs.dtype)).reshape(count, -1)
        return torch.stack([difference.square().mean(1), difference.abs().mean(1)])

    def _callable_sum(self, outputs: Any, targets: Tensor) -> Tensor:
        """The loss sum of one batch from a loss callable (0-dim)."""
        count = targets.shape[0]
        value = self.loss(outputs, targets)
        if value.ndim == 0:
            return value.to(self._stat_dtype) * count
        if value.shape == (count,):
            return value.sum(dtype=self._stat_dtype)
        raise ValueError(
            f"a loss callable must return per-sample losses ({count},) or a scalar "
            f"batch mean, got shape {tuple(value.shape)}"
        )

    def _store(self, results: dict[str, np.ndarray], first: int, stats: np.ndarray) -> None:
        """Write the metrics of K points (per-batch sums ``(K, n_batches, n_stats)``) into
        ``results[name][first : first + K]``, with numpy ops over all K points at once."""
        names = ["loss"] + ([self._second] if self._second else [])
        stop = first + len(stats)
        row = 0
        for evalset in self._sets:
            count = len(evalset.bounds)
            part = np.ascontiguousarray(stats[:, row : row + count].transpose(0, 2, 1))
            row += count
            means = part.sum(axis=-1) / evalset.sizes.sum()
            errors = _standard_errors(part, evalset.sizes)
            for column, name in enumerate(names):
                results[f"{evalset.name}_{name}"][first:stop] = means[:, column]
                results[f"{evalset.name}_{name}_se"][first:stop] = errors[:, column]

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

    def __init__(self, evaluator: SurfaceEvaluator, model: nn.Module | None = None) -> None:
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


# --------------------------------------------------------------------------- small utilities


def _cxx_available() -> bool:
    import shutil

    if os.environ.get("SAMLAB_NO_COMPILE", "") not in ("", "0"):
        return False
    cxx = os.environ.get("CXX", "")
    return bool((cxx and shutil.which(cxx)) or shutil.which("g++") or shutil.which("clang++"))


def _fail_on_recompile():
    import contextlib

    set_stance = getattr(torch.compiler, "set_stance", None)
    return set_stance("fail_on_recompile") if set_stance else contextlib.nullcontext()


def _unaliased(value: Any, storages: set[int]) -> Any:
    """``value`` with every tensor that shares one of ``storages`` replaced by a copy."""
    if isinstance(value, Tensor):
        return value.clone() if value.untyped_storage().data_ptr() in storages else value
    if isinstance(value, (tuple, list)):
        return type(value)(_unaliased(item, storages) for item in value)
    if isinstance(value, dict):
        return {key: _unaliased(item, storages) for key, item in value.items()}
    return value


def _prefix_set(evalset: _EvalSet, rows: int) -> _EvalSet:
    """The first ``rows`` samples of ``evalset`` (views), same nominal batches and forward
    chunk."""
    bounds = [(start, min(stop, rows)) for start, stop in evalset.bounds if start < rows]
    sizes = np.array([stop - start for start, stop in bounds], dtype=np.float64)
    inputs, targets = evalset.inputs[:rows], evalset.targets[:rows]
    batches = [(inputs[start:stop], targets[start:stop]) for start, stop in bounds]
    prefix = _EvalSet(evalset.name, inputs, targets, evalset.indices[:rows], bounds, sizes, batches)
    prefix.set_chunk(evalset.chunks[0][1] - evalset.chunks[0][0])
    return prefix


def _launched_ranks() -> int:
    """The size of the MPI job this process belongs to (1 outside MPI): mpi4py's world when
    it is initialised, else the launcher's environment (Open MPI, MPICH/Hydra, MVAPICH)."""
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None:
        try:
            if mpi.Is_initialized() and not mpi.Is_finalized():
                return int(mpi.COMM_WORLD.Get_size())
        except Exception:  # noqa: BLE001 - fall back to the environment
            pass
    for key in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE"):
        value = os.environ.get(key, "")
        if value.isdigit():
            return int(value)
    return 1


def _nbytes(value: Any) -> int:
    return sum(t.numel() * t.element_size() for t in _flatten_tensors(value))


def _class_indices(targets: Tensor, n_classes: int | None) -> bool:
    """Whether ``targets`` is a 1-D integer tensor of class indices (in ``[0, n_classes)``
    when ``n_classes`` is given): the targets the cross-entropy fast paths take."""
    if targets.is_floating_point() or targets.ndim != 1:
        return False
    return n_classes is None or bool(((targets >= 0) & (targets < n_classes)).all())


def _fast_cross_entropy_stats(outputs: Tensor, targets: Tensor) -> Tensor:
    """Per-sample ``[cross-entropy, top-1 correct]`` ``(2, N)`` of logits ``(N, C)`` and class
    indices in ``[0, C)``, written for a compiler: the log-sum-exp and the first index of the
    row maximum from row maxima and comparisons (vectorised reductions; an ``argmax`` is a
    scalar loop in inductor's CPU code). Correct means what ``argmax`` gives: the target is
    the first index holding the row's maximum (NaN counting as the maximum)."""
    if outputs.dtype in (torch.float16, torch.bfloat16):
        outputs = outputs.float()
    classes = outputs.shape[1]
    top = outputs.amax(1, keepdim=True)
    lse = (outputs - top).exp().sum(1).log() + top.squeeze(1)
    picked = outputs.gather(1, targets[:, None]).squeeze(1)
    hit = (outputs == top) | (outputs != outputs)
    index = torch.arange(classes, device=outputs.device)
    first = torch.where(hit, index, classes).amin(1)
    return torch.stack([lse - picked, (first == targets).to(outputs.dtype)])


def _pad_rows(inputs: Tensor, rows: int) -> Tensor:
    missing = rows - len(inputs)
    if missing <= 0:
        return inputs
    filler = inputs[:1].expand((missing,) + tuple(inputs.shape[1:]))
    return torch.cat([inputs, filler])


def _outputs_close(got: Any, expected: Any) -> bool:
    if not (isinstance(got, Tensor) and isinstance(expected, Tensor)):
        return False
    if got.shape != expected.shape:
        return False
    tol = 1e-10 if got.dtype == torch.float64 else 1e-4 if got.dtype == torch.float32 else 1e-2
    scale = 1.0 + float(expected.abs().max()) if expected.numel() else 1.0
    return float((got - expected).abs().max()) <= tol * scale


def _flatten_tensors(value: Any) -> list[Tensor]:
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in _flatten_tensors(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in _flatten_tensors(item)]
    return []


def _describe_subset(subset: Any) -> int | str | None:
    """A subset option as provenance: None, its size, or "indices" (their hash is recorded)."""
    if subset is None:
        return None
    return int(subset) if isinstance(subset, (int, np.integer)) else "indices"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Tensor):
        return _jsonable(value.tolist())
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


# --------------------------------------------------------------------------- whole surfaces


def _compute(
    evaluator: SurfaceEvaluator,
    x: np.ndarray,
    y: np.ndarray | None,
    progress: bool,
    callback: Callable[[np.ndarray, dict[str, np.ndarray]], None] | None,
    chunk_size: int | None,
) -> Surface:
    from tqdm.auto import tqdm

    coords = grid_coordinates(x, y)
    total = len(coords)
    chunk = chunk_size or evaluator.default_chunk_size
    if chunk < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk}")
    metrics = {name: np.full(total, np.nan) for name in evaluator.metric_names}
    done = np.zeros(total, dtype=bool)
    with tqdm(total=total, unit="point", desc="surface", disable=not progress) as bar:
        for start in range(0, total, chunk):
            indices = np.arange(start, min(total, start + chunk))
            values = evaluator.evaluate_points(coords[indices])
            for name, value in values.items():
                metrics[name][indices] = value
            done[indices] = True
            if callback is not None:
                callback(indices, values)
            bar.update(len(indices))
    shape = (x.size,) if y is None else (y.size, x.size)
    return Surface(
        x=x,
        y=y,
        metrics={name: value.reshape(shape) for name, value in metrics.items()},
        done=done.reshape(shape),
        provenance=evaluator.provenance,
        sample_indices=evaluator.sample_indices,
    )


def surface_1d(
    model: nn.Module,
    directions: Directions,
    data: Any,
    *,
    x: np.ndarray | Sequence[float] | None = None,
    progress: bool = True,
    callback: Callable[[np.ndarray, dict[str, np.ndarray]], None] | None = None,
    chunk_size: int | None = None,
    **evaluator_options: Any,
) -> Surface:
    """The loss along one direction at ``x`` (default ``np.linspace(-1, 1, 51)``).

    ``evaluator_options`` go to :class:`SurfaceEvaluator` (``loss``, ``test_data``,
    ``bn_mode``, ``batch_size``, ``subset``, ``mode``, ...). Points are evaluated in chunks
    of ``chunk_size`` (default: the evaluator's) with a tqdm bar in points/s;
    ``callback(indices, metrics)`` is called after each chunk with the flat indices and their
    values.
    """
    x = _axis("x", np.linspace(-1.0, 1.0, 51) if x is None else x)
    if directions.y is not None:
        raise ValueError("surface_1d needs 1-D directions (directions.y is set): use surface_2d")
    evaluator = SurfaceEvaluator(model, directions, data, **evaluator_options)
    return _compute(evaluator, x, None, progress, callback, chunk_size)


def surface_2d(
    model: nn.Module,
    directions: Directions,
    data: Any,
    *,
    x: np.ndarray | Sequence[float] | None = None,
    y: np.ndarray | Sequence[float] | None = None,
    progress: bool = True,
    callback: Callable[[np.ndarray, dict[str, np.ndarray]], None] | None = None,
    chunk_size: int | None = None,
    **evaluator_options: Any,
) -> Surface:
    """The loss on the plane ``theta0 + a * dx + b * dy`` over ``x`` × ``y``.

    Defaults ``np.linspace(-1, 1, 51)`` for both axes. Arrays come back shaped ``(ny, nx)``
    with element ``[i, j]`` at ``(x[j], y[i])``; see :func:`surface_1d` for the options.
    """
    x = _axis("x", np.linspace(-1.0, 1.0, 51) if x is None else x)
    y = _axis("y", np.linspace(-1.0, 1.0, 51) if y is None else y)
    if directions.y is None:
        raise ValueError("surface_2d needs 2-D directions (directions.y is None)")
    evaluator = SurfaceEvaluator(model, directions, data, **evaluator_options)
    return _compute(evaluator, x, y, progress, callback, chunk_size)
