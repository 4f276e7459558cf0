"""Generated images for smoke runs and benchmarks: no files, deterministic per index.

:class:`FakeImages` plays the role of ``torchvision.datasets.FakeData`` for small images: image
``i`` and its label are drawn from a generator seeded with ``offset + i`` (the same image in
every epoch, worker and process), but as a uint8 tensor directly instead of a float image
converted through PIL, which costs about 2 ms per 32x32 image on one core and would make a
``DataLoader`` measure the conversion rather than the augmentation. ImageNet-shaped fake data,
whose pipeline starts from PIL images, uses torchvision's ``FakeData`` itself.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["FakeImages"]


class FakeImages(Dataset):
    """``size`` uniform-noise uint8 images of ``shape`` (C, H, W) with labels in
    ``range(num_classes)``, returned as ``(transform(image), label)``."""

    def __init__(
        self,
        size: int,
        shape: tuple[int, int, int],
        num_classes: int,
        transform: Callable[[Tensor], Tensor] | None = None,
        *,
        offset: int = 0,
    ) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"fake_size must be a positive integer, got {size!r}")
        self.size = size
        self.shape = tuple(shape)
        self.num_classes = num_classes
        self.transform = transform
        self.offset = offset

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        if not -self.size <= index < self.size:
            raise IndexError(f"FakeImages index {index} out of range for {self.size} images")
        generator = torch.Generator().manual_seed(self.offset + index % self.size)
        image = torch.randint(0, 256, self.shape, dtype=torch.uint8, generator=generator)
        label = int(torch.randint(self.num_classes, (), generator=generator))
        return (self.transform(image) if self.transform is not None else image), label
