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
  conv/linear layer (:mod:`landscape.evaluate.fold`); the folded weights are recomputed from the
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

The code: this module holds :class:`Surface`, the grid and the entry points
(:func:`surface_1d`, :func:`surface_2d`); :class:`SurfaceEvaluator` and :func:`as_tensors` are
defined in private modules (``landscape/_surface_*.py``, see :mod:`landscape.evaluate.evaluator`)
and re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import nn

from landscape.evaluate import BN_MODES as BN_MODES

# Defined in landscape.evaluate, importable from here as before.
from landscape.evaluate import CENTER_TOLERANCE as CENTER_TOLERANCE
from landscape.evaluate import LOSSES as LOSSES
from landscape.evaluate import MODES as MODES
from landscape.evaluate import SurfaceEvaluator as SurfaceEvaluator
from landscape.evaluate import as_tensors as as_tensors
from landscape.evaluate import standard_error as standard_error

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
