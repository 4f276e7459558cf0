"""The batches a :class:`~landscape.curvature.HessianOperator` differentiates.

The operator's loss is the sample-weighted mean over every sample of every batch,

    L(theta) = sum_b (n_b / N) * mean_loss_b(theta),    N = sum_b n_b,

so a batch contributes with weight ``n_b / N`` whatever the batch sizes. :class:`OperatorBatches`
materialises the batches once on the device (floating inputs and targets in the operator's
dtype, class indices as int64), keeps those of this process (``shard=(rank, world)`` takes
batches ``rank, rank + world, ...``) and learns the global ``N`` through the ``reducer`` (a
callable returning the sum of a flat tensor over all processes, e.g. an MPI all-reduce).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from landscape.evaluate.data import as_tensors
from landscape.evaluate.provenance import data_sha256, describe_subset, hash_indices

#: ``reducer(flat) -> flat``: the elementwise sum of ``flat`` over all processes
Reducer = Callable[[Tensor], Tensor]


def _is_pair(data: Any) -> bool:
    return (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and all(isinstance(part, (Tensor, np.ndarray)) for part in data)
    )


def _batch_list(data: Any) -> list[tuple[Tensor, Tensor]]:
    """``data`` as a list of ``(inputs, targets)`` tensor pairs, empty batches dropped."""
    from torch.utils.data import DataLoader, Dataset

    if _is_pair(data):
        items = [data]
    elif isinstance(data, Dataset) and not isinstance(data, DataLoader):
        raise TypeError(
            "data is a Dataset; pass DataLoader(dataset, batch_size=...) or an "
            "(inputs, targets) pair"
        )
    else:
        try:
            items = list(data)
        except TypeError:
            raise TypeError(
                "data must be an (inputs, targets) pair or a sequence / DataLoader of such "
                f"batches, got {type(data).__name__}"
            ) from None
    batches = []
    for index, item in enumerate(items):
        if not _is_pair(item):
            raise TypeError(f"batch {index} is not an (inputs, targets) pair of tensors")
        inputs, targets = (torch.as_tensor(part) for part in item)
        if inputs.ndim == 0 or targets.ndim == 0 or len(inputs) != len(targets):
            raise ValueError(
                f"batch {index}: inputs and targets need the same first dimension, got "
                f"{tuple(inputs.shape)} and {tuple(targets.shape)}"
            )
        if len(inputs):
            batches.append((inputs, targets))
    if not batches:
        raise ValueError(
            "the data hold no samples (an empty loader?): pass an (inputs, targets) pair or "
            "a non-empty sequence / DataLoader of batches"
        )
    return batches


def _cast(inputs: Tensor, targets: Tensor, dtype: torch.dtype, loss: Any) -> tuple:
    if inputs.is_floating_point():
        inputs = inputs.to(dtype)
    if loss == "crossentropy" and not targets.is_floating_point():
        targets = targets.long()
    elif loss in ("crossentropy", "mse"):
        targets = targets.to(dtype)
    return inputs, targets


class OperatorBatches:
    """The batches of this process on ``device`` and the global sample count.

    Build with :meth:`load`; an operator and the operators :meth:`restricted` from it share one.
    """

    def __init__(
        self,
        batches: Sequence[tuple[Tensor, Tensor]],
        *,
        device: torch.device,
        batch_indices: Sequence[int],
        total_batches: int,
        reducer: Reducer | None = None,
        shard: tuple[int, int] | None = None,
        subset: Any = None,
        subset_seed: int = 0,
        indices: np.ndarray | None = None,
    ) -> None:
        self.batches = list(batches)
        self.batch_indices = list(batch_indices)
        self.total_batches = total_batches
        self.reducer = reducer
        self.shard = shard
        self.subset = subset
        self.subset_seed = subset_seed
        self.indices = indices
        self.local_samples = sum(len(inputs) for inputs, _ in self.batches)
        self.samples = self.local_samples
        if reducer is not None:
            exact = torch.float32 if device.type == "mps" else torch.float64
            count = torch.tensor([float(self.local_samples)], dtype=exact, device=device)
            self.samples = round(float(self.reduce(count).reshape(-1)[0]))
        if self.samples <= 0:
            raise ValueError("no process holds a sample: the operator's data are empty")
        self._sha256: str | None = None

    @classmethod
    def load(
        cls,
        data: Any,
        *,
        loss: Any,
        device: torch.device,
        dtype: torch.dtype,
        subset: int | Sequence[int] | np.ndarray | None = None,
        subset_seed: int = 0,
        batch_size: int | None = None,
        reducer: Reducer | None = None,
        shard: tuple[int, int] | None = None,
    ) -> OperatorBatches:
        """``data`` (an ``(inputs, targets)`` pair, or a sequence / ``DataLoader`` of them) as
        the batches of this process.

        With ``subset`` or ``batch_size`` the samples are first gathered into one set (a
        ``DataLoader``'s dataset is read in order, its sampler ignored, as
        :func:`landscape.evaluate.as_tensors` does), ``subset`` drawn from it (an int ``k``: a
        random subset of size ``k`` seeded with ``subset_seed``; or explicit indices), and cut
        into batches of ``batch_size`` (None: one batch). Otherwise the batches are taken as
        they come."""
        from torch.utils.data import DataLoader

        if reducer is not None and not callable(reducer):
            raise ValueError("reducer must be a callable (flat tensor) -> its sum over processes")
        if shard is not None:
            if reducer is None:
                raise ValueError("shard=(rank, world) needs reducer= to sum the processes' parts")
            if len(shard) != 2 or not 0 <= shard[0] < shard[1]:
                raise ValueError(f"shard must be (rank, world) with 0 <= rank < world: {shard}")
        if batch_size is not None and (isinstance(batch_size, bool) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
        indices = None
        if subset is not None or batch_size is not None:
            if not isinstance(data, DataLoader) and not _is_pair(data):
                parts = _batch_list(data)
                data = (torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts]))
            inputs, targets, indices = as_tensors(data, subset=subset, subset_seed=subset_seed)
            step = batch_size or len(inputs)
            pairs = [
                (inputs[s : s + step], targets[s : s + step]) for s in range(0, len(inputs), step)
            ]
        else:
            pairs = _batch_list(data)
        positions = list(range(len(pairs)))
        if shard is not None:
            rank, world = shard
            positions = positions[rank::world]
        mine = [
            _cast(x.to(device), y.to(device), dtype, loss) for x, y in (pairs[i] for i in positions)
        ]
        return cls(
            mine,
            device=device,
            batch_indices=positions,
            total_batches=len(pairs),
            reducer=reducer,
            shard=shard,
            subset=subset,
            subset_seed=subset_seed,
            indices=indices,
        )

    def weights(self) -> list[float]:
        """``n_b / N`` of each batch of this process (``N`` over all processes)."""
        return [len(inputs) / self.samples for inputs, _ in self.batches]

    def reduce(self, flat: Tensor) -> Tensor:
        """The sum of ``flat`` over all processes (``flat`` itself without a reducer)."""
        if self.reducer is None:
            return flat
        reduced = self.reducer(flat)
        if not isinstance(reduced, Tensor) or reduced.shape != flat.shape:
            raise ValueError(
                "the reducer must return a tensor shaped like its argument (the sum over "
                f"processes), got {type(reduced).__name__}"
            )
        return reduced.to(device=flat.device, dtype=flat.dtype)

    @property
    def sha256(self) -> str:
        """:func:`landscape.evaluate.data_sha256` of this process's batches (the values as
        differentiated, in batch order; computed once): the digest a surface file records for
        the same samples in the same dtype."""
        if self._sha256 is None:
            self._sha256 = data_sha256(self.batches)
        return self._sha256

    def describe(self) -> dict[str, Any]:
        """JSON-able facts: sample counts, batches, shard, subset and the data digest."""
        facts: dict[str, Any] = {
            "samples": self.samples,
            "local_samples": self.local_samples,
            "batches": self.total_batches,
            "batch_sizes": [len(inputs) for inputs, _ in self.batches],
            "batch_indices": self.batch_indices,
            "shard": list(self.shard) if self.shard is not None else None,
            "data_sha256": self.sha256,
            "subset": describe_subset(self.subset),
            "subset_seed": self.subset_seed,
        }
        if self.indices is not None:
            facts["indices_sha256"] = hash_indices(self.indices)
        return facts
