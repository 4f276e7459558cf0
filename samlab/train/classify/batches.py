"""The batches of a classification run: :class:`Batches` serves ``(inputs, targets)`` on the
device from tensors, a ``Dataset`` or a ``DataLoader``.

Training data come in the order ``randperm(n, generator)``, the generator seeded by ``(seed,
epoch)`` (:func:`~samlab.utils.epoch_generator`), the same for tensors and Datasets; a
DataLoader is used as it is. Under DDP (``shard=(rank, world)``) every global batch of
``batch_size`` rows is cut into ``world`` equal consecutive parts and rank ``r`` gets part ``r``,
so ``world`` ranks together step on exactly the batches of one process; a last batch that does
not split evenly is dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

__all__ = ["Batches"]


class Batches:
    """Batches of (inputs, targets) on ``device`` from tensors, a Dataset or a DataLoader."""

    def __init__(
        self,
        data: Any,
        batch_size: int,
        *,
        train: bool,
        device: torch.device,
        drop_last: bool = False,
        num_workers: int = 0,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        self.device, self.batch_size, self.train = device, batch_size, train
        self.drop_last = train and drop_last
        self.num_workers = num_workers
        self.rank, self.world = shard if train else (0, 1)
        self.tensors: tuple[Tensor, Tensor] | None = None
        self.loader: DataLoader | None = None
        self.dataset: Dataset | None = None
        if isinstance(data, TensorDataset) and len(data.tensors) == 2:
            data = data.tensors
        if isinstance(data, (tuple, list)) and len(data) == 2:
            inputs, targets = data
            if len(inputs) != len(targets):
                raise ValueError(f"{len(inputs)} inputs but {len(targets)} targets")
            self.tensors = (torch.as_tensor(inputs).to(device), torch.as_tensor(targets).to(device))
            self.size = len(inputs)
        elif isinstance(data, DataLoader):
            if self.world > 1:
                raise ValueError(
                    "under DDP pass a Dataset or tensors (samlab shards each global batch), "
                    "not a DataLoader"
                )
            self.loader = data
            self.size = len(data.dataset)
        elif hasattr(data, "__getitem__") and hasattr(data, "__len__"):
            self.dataset = data
            self.size = len(data)
        else:
            raise TypeError(
                "data must be an (inputs, targets) pair of tensors, a Dataset or a DataLoader, "
                f"got {type(data).__name__}"
            )
        if self.size == 0:
            raise ValueError("the data set is empty")
        if self.world > 1 and batch_size % self.world:
            raise ValueError(
                f"batch_size {batch_size} (the global batch) must be divisible by the "
                f"{self.world} DDP processes"
            )

    def __len__(self) -> int:
        if self.loader is not None:
            return len(self.loader)
        full, rest = divmod(self.size, self.batch_size)
        keep_last = rest > 0 and not self.drop_last and rest % self.world == 0
        return full + keep_last

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return self.epoch(None)

    def epoch(self, generator: torch.Generator | None) -> Iterator[tuple[Tensor, Tensor]]:
        """One pass (this rank's part of every batch under DDP)."""
        if self.loader is not None:
            batches = iter(self.loader)
        else:
            shuffle = self.train and generator is not None
            order = torch.randperm(self.size, generator=generator) if shuffle else None
            if self.tensors is not None:
                batches = self._tensor_batches(order)
            else:
                batches = iter(self._loader(order, generator))
        for inputs, targets in batches:
            yield inputs.to(self.device, non_blocking=True), targets.to(self.device)

    def _rows(self, i: int, order: Tensor | None) -> slice | Tensor:
        start, stop = i * self.batch_size, min((i + 1) * self.batch_size, self.size)
        part = (stop - start) // self.world
        start, stop = start + self.rank * part, start + (self.rank + 1) * part
        return slice(start, stop) if order is None else order[start:stop]

    def _tensor_batches(self, order: Tensor | None) -> Iterator[tuple[Tensor, Tensor]]:
        x, y = self.tensors
        for i in range(len(self)):
            rows = self._rows(i, order)
            if isinstance(rows, Tensor):
                rows = rows.to(self.device)
            yield x[rows], y[rows]

    def _loader(self, order: Tensor | None, generator: torch.Generator | None) -> DataLoader:
        options = dict(
            generator=generator,  # seeds the workers
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        if self.world == 1:
            return DataLoader(
                self.dataset,
                batch_size=self.batch_size,
                sampler=None if order is None else order.tolist(),
                drop_last=self.drop_last,
                **options,
            )
        every = torch.arange(self.size) if order is None else order
        batches = []
        for i in range(len(self)):
            rows = self._rows(i, every)
            batches.append(rows.tolist())
        return DataLoader(self.dataset, batch_sampler=batches, **options)
