"""The evaluation data of a :class:`~landscape.evaluate.SurfaceEvaluator`.

:func:`as_tensors` materialises the evaluation data once on the device; :class:`EvalSet` holds
one such set (training or test) in the model's dtype, split into contiguous nominal batches of
``batch_size`` (what statistics are summed over) and forward chunks (what one forward call
takes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor


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
class EvalSet:
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
    repeated_targets: dict[int, Tensor] = field(default_factory=dict)  # K -> targets K times

    @classmethod
    def load(
        cls,
        name: str,
        data: Any,
        *,
        subset: Any,
        subset_seed: int,
        device: torch.device,
        dtype: torch.dtype,
        loss: Any,
        batch_size: int,
    ) -> EvalSet:
        """``data`` (see :func:`as_tensors`) on ``device``: floating inputs in ``dtype``, and
        targets as the loss takes them (class indices as int64, probabilities and regression
        targets in ``dtype``); forward chunks of ``batch_size``."""
        inputs, targets, indices = as_tensors(
            data, subset=subset, subset_seed=subset_seed, device=device
        )
        if inputs.is_floating_point() and inputs.dtype != dtype:
            inputs = inputs.to(dtype)
        if loss == "crossentropy":
            if not targets.is_floating_point():
                targets = targets.long()
            elif targets.dtype != dtype:
                targets = targets.to(dtype)
        elif loss == "mse" and targets.dtype != dtype:
            targets = targets.to(dtype)
        size = len(inputs)
        bounds = [(s, min(s + batch_size, size)) for s in range(0, size, batch_size)]
        evalset = cls.from_bounds(name, inputs, targets, indices, bounds)
        evalset.set_chunk(batch_size)
        return evalset

    @classmethod
    def from_bounds(
        cls,
        name: str,
        inputs: Tensor,
        targets: Tensor,
        indices: np.ndarray,
        bounds: list[tuple[int, int]],
    ) -> EvalSet:
        """A set whose nominal batches are the rows ``bounds`` (no forward chunks yet)."""
        sizes = np.array([stop - start for start, stop in bounds], dtype=np.float64)
        batches = [(inputs[start:stop], targets[start:stop]) for start, stop in bounds]
        return cls(name, inputs, targets, indices, bounds, sizes, batches)

    @property
    def chunk_size(self) -> int:
        """Rows per forward call (of every chunk but the last)."""
        return self.chunks[0][1] - self.chunks[0][0]

    def set_chunk(self, chunk: int) -> None:
        """Forward ``chunk`` rows per call."""
        size = len(self.inputs)
        self.chunks = [(start, min(start + chunk, size)) for start in range(0, size, chunk)]
        self.chunk_inputs = [self.inputs[start:stop] for start, stop in self.chunks]

    def prefix(self, rows: int) -> EvalSet:
        """The first ``rows`` samples (views), same nominal batches and forward chunk."""
        bounds = [(start, min(stop, rows)) for start, stop in self.bounds if start < rows]
        prefix = EvalSet.from_bounds(
            self.name, self.inputs[:rows], self.targets[:rows], self.indices[:rows], bounds
        )
        prefix.set_chunk(self.chunk_size)
        return prefix

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
