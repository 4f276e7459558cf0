"""Image transforms: Cutout, and the train/test pipelines of each dataset family.

Small images (CIFAR, fake data at CIFAR size, the digits) are kept as uint8 tensors
(C, H, W); their pipeline works on tensors, in the seeds' order:

* ``base``: ``RandomCrop(H, padding=4)`` (zero padding, i.e. black pixels) and
  ``RandomHorizontalFlip()``, then scaling to [0, 1] and ``Normalize(mean, std)``;
* ``cutout``: ``base`` followed by :class:`Cutout` ``(16, p=0.5)`` on the normalised image, as
  in SSAM's ``CIFAR10_cutout`` (the erased square is 0 after normalisation: the mean colour);
* ``none``: scaling and normalisation only (always used for test sets).

ImageNet images are PIL images read by ``ImageFolder``; ``base`` is ``RandomResizedCrop(S)``
and ``RandomHorizontalFlip()``, ``none`` is ``Resize(S * 256 / 224)`` then ``CenterCrop(S)``
(S = 224 by default), each followed by ``ToTensor()`` and ``Normalize``; ``cutout`` adds
:class:`Cutout` there too.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision import transforms as T

from .specs import AUGMENTATIONS

__all__ = ["Cutout", "imagenet_transform", "tensor_transform"]


class Cutout:
    """Erase (set to 0) a ``size`` x ``size`` square of an image tensor with probability ``p``.

    DeVries and Taylor, "Improved Regularization of Convolutional Neural Networks with Cutout"
    (arXiv:1708.04552), as SSAM applies it: draw ``u ~ U[0, 1)`` and leave the image unchanged
    unless ``u < p``; otherwise draw the square's centre ``(y, x)`` uniformly over all pixels,
    take rows ``y - size // 2`` to ``y - size // 2 + size`` (and the same for columns) clipped
    to the image -- so a centre near the border erases a smaller, clipped rectangle -- and
    zero that region in every channel. Takes and returns (C, H, W) tensors (a new tensor; the
    input is not modified). Random numbers come from ``generator``, else torch's global RNG
    (seeded per worker by ``DataLoader``).

    .. note:: SSAM applies Cutout when ``u <= p``; with ``u < p`` here, ``p=0`` is exactly the
       identity and ``p=1`` always erases.
    """

    def __init__(
        self, size: int = 16, p: float = 0.5, *, generator: torch.Generator | None = None
    ) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"Cutout size must be a positive integer, got {size!r}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Cutout probability p must lie in [0, 1], got {p}")
        self.size = size
        self.p = p
        self.generator = generator

    def __call__(self, image: Tensor) -> Tensor:
        if not isinstance(image, Tensor) or image.dim() < 2:
            raise ValueError("Cutout takes an image tensor shaped (C, H, W) or (H, W)")
        if float(torch.rand((), generator=self.generator)) >= self.p:
            return image
        height, width = image.shape[-2:]
        y = int(torch.randint(height, (), generator=self.generator))
        x = int(torch.randint(width, (), generator=self.generator))
        top, left = y - self.size // 2, x - self.size // 2
        out = image.clone()
        out[..., max(top, 0) : max(top + self.size, 0), max(left, 0) : max(left + self.size, 0)] = 0
        return out

    def __repr__(self) -> str:
        return f"Cutout(size={self.size}, p={self.p})"


def _check_augment(augment: str) -> None:
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {', '.join(AUGMENTATIONS)}, got {augment!r}")


def tensor_transform(
    augment: str,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    *,
    image_size: int,
    padding: int = 4,
    cutout_size: int = 16,
    cutout_p: float = 0.5,
) -> T.Compose:
    """The pipeline for uint8 (C, H, W) tensors of ``image_size`` pixels (module docstring)."""
    _check_augment(augment)
    steps: list = []
    if augment in ("base", "cutout"):
        steps += [T.RandomCrop(image_size, padding=padding), T.RandomHorizontalFlip()]
    steps += [T.ConvertImageDtype(torch.float32), T.Normalize(mean, std)]
    if augment == "cutout":
        steps.append(Cutout(cutout_size, cutout_p))
    return T.Compose(steps)


def imagenet_transform(
    augment: str,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    *,
    image_size: int = 224,
    cutout_size: int = 16,
    cutout_p: float = 0.5,
) -> T.Compose:
    """The pipeline for PIL images of ImageNet (module docstring)."""
    _check_augment(augment)
    if augment == "none":
        steps: list = [T.Resize(round(image_size * 256 / 224)), T.CenterCrop(image_size)]
    else:
        steps = [T.RandomResizedCrop(image_size), T.RandomHorizontalFlip()]
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    if augment == "cutout":
        steps.append(Cutout(cutout_size, cutout_p))
    return T.Compose(steps)
