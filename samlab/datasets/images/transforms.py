"""Image transforms: Cutout, and the train/test pipelines of each dataset family.

Small images (CIFAR, fake data at CIFAR size, the digits) are kept as uint8 tensors
(C, H, W); their pipeline works on tensors, in the seeds' order:

* ``base``: ``RandomCrop(H, padding=4)`` (zero padding, i.e. black pixels) and
  ``RandomHorizontalFlip()``, then scaling to [0, 1] and ``Normalize(mean, std)``;
* ``cutout``: ``base`` followed by :class:`Cutout` ``(16, p=0.5)`` on the normalised image, as
  in SSAM's ``CIFAR10_cutout`` (the erased square is 0 after normalisation: the mean colour);
* ``none``: scaling and normalisation only (always used for test sets).

:class:`TensorAugment` does these steps in one object with a handful of tensor operations
(same results as the torchvision transforms named above, other random draws).

ImageNet images are PIL images read by ``ImageFolder``; ``base`` is ``RandomResizedCrop(S)``
and ``RandomHorizontalFlip()``, ``none`` is ``Resize(S * 256 / 224)`` then ``CenterCrop(S)``
(S = 224 by default), each followed by ``ToTensor()`` and ``Normalize``; ``cutout`` adds
:class:`Cutout` there too.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .specs import AUGMENTATIONS

__all__ = ["Cutout", "TensorAugment", "imagenet_transform", "tensor_transform"]


class Cutout:
    """Erase (set to 0) a ``size`` x ``size`` square of an image tensor with probability ``p``.

    DeVries and Taylor, "Improved Regularization of Convolutional Neural Networks with Cutout"
    (arXiv:1708.04552), as SSAM applies it: draw ``u ~ U[0, 1)`` and leave the image unchanged
    unless ``u < p``; otherwise draw the square's centre ``(y, x)`` uniformly over all pixels
    (one integer ``v`` below ``H * W``: ``y, x = divmod(v, W)``),
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
        y, x = divmod(int(torch.randint(height * width, (), generator=self.generator)), width)
        top, left = y - self.size // 2, x - self.size // 2
        out = image.clone()
        out[..., max(top, 0) : max(top + self.size, 0), max(left, 0) : max(left + self.size, 0)] = 0
        return out

    def __repr__(self) -> str:
        return f"Cutout(size={self.size}, p={self.p})"


def _check_augment(augment: str) -> None:
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {', '.join(AUGMENTATIONS)}, got {augment!r}")


class TensorAugment:
    """The small-image pipeline in one object: uint8 (C, H, W) in, float32 (C, H, W) out.

    With ``padding`` (``base``/``cutout``): place the image at a random offset in a canvas
    padded by ``padding`` zero pixels on every side and cut out the original size -- the same
    draws and result as ``RandomCrop(H, padding=padding)`` -- then flip left-right with
    probability 0.5 (``RandomHorizontalFlip()``). Always: scale to [0, 1] and normalise
    (``Normalize(mean, std)``), fused into one multiply-add. Then ``cutout`` if given. One
    object with a few tensor operations instead of a ``Compose`` of five transforms, so a
    ``DataLoader`` worker spends its time on the augmentation itself.
    """

    def __init__(
        self,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        *,
        padding: int | None = None,
        cutout: Cutout | None = None,
    ) -> None:
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"mean {mean} and std {std} must have one positive std per channel")
        if padding is not None and padding < 0:
            raise ValueError(f"padding must be non-negative, got {padding}")
        self.mean, self.std = tuple(mean), tuple(std)
        self.padding = padding
        self.cutout = cutout
        std_t = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1) / std_t

    def _crop_flip(self, image: Tensor) -> Tensor:
        pad, side = self.padding, 2 * self.padding + 1
        height, width = image.shape[-2:]
        # one draw for the two offsets and the flip, all uniform and independent
        draw = int(torch.randint(2 * side * side, ()))
        flip, offsets = draw % 2, draw // 2
        dy, dx = offsets // side - pad, offsets % side - pad
        out = torch.zeros_like(image)
        # out[y, x] = image[y + dy, x + dx] where that pixel exists, else 0 (the padding)
        top, bottom = max(0, -dy), min(height, height - dy)
        left, right = max(0, -dx), min(width, width - dx)
        out[..., top:bottom, left:right] = image[
            ..., top + dy : bottom + dy, left + dx : right + dx
        ]
        return out.flip(-1) if flip else out

    def __call__(self, image: Tensor) -> Tensor:
        if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != len(self.mean):
            raise ValueError(
                f"expected a uint8 image ({len(self.mean)}, H, W), got {image.dtype} "
                f"{tuple(image.shape)}"
            )
        if self.padding is not None:
            image = self._crop_flip(image)
        out = torch.addcmul(self.shift, image.float(), self.scale)
        return self.cutout(out) if self.cutout is not None else out

    def __repr__(self) -> str:
        return f"TensorAugment(padding={self.padding}, cutout={self.cutout!r})"


def tensor_transform(
    augment: str,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    *,
    padding: int = 4,
    cutout_size: int = 16,
    cutout_p: float = 0.5,
) -> TensorAugment:
    """The pipeline for uint8 (C, H, W) tensors (module docstring) as a :class:`TensorAugment`."""
    _check_augment(augment)
    return TensorAugment(
        mean,
        std,
        padding=None if augment == "none" else padding,
        cutout=Cutout(cutout_size, cutout_p) if augment == "cutout" else None,
    )


def imagenet_transform(
    augment: str,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    *,
    image_size: int = 224,
    cutout_size: int = 16,
    cutout_p: float = 0.5,
) -> Callable:
    """The pipeline for PIL images of ImageNet (module docstring): a torchvision ``Compose``."""
    from torchvision import transforms as T

    _check_augment(augment)
    if augment == "none":
        steps: list = [T.Resize(round(image_size * 256 / 224)), T.CenterCrop(image_size)]
    else:
        steps = [T.RandomResizedCrop(image_size), T.RandomHorizontalFlip()]
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    if augment == "cutout":
        steps.append(Cutout(cutout_size, cutout_p))
    return T.Compose(steps)
