"""What each image dataset is: classes, sample shape, normalisation, and the names it goes by.

Canonical names are ``cifar10``, ``cifar100``, ``imagenet``, ``digits`` and ``fakedata``; the
seed projects' spellings (SSAM's ``CIFAR10_base``, ``CIFAR10_cutout``, ``CIFAR100_base``,
``CIFAR100_cutout``, ``ImageNet_base``; ``CIFAR10_cut``) name a dataset and its training
augmentation together and are matched case-insensitively by :func:`resolve_image_dataset`.

Normalisation constants are each training set's per-channel mean and standard deviation:
CIFAR-10 (125.3, 123.0, 113.9) / 255 and (63.0, 62.1, 66.7) / 255 (the constants of SSAM and of
the SAM literature), CIFAR-100 (0.5071, 0.4865, 0.4409) and (0.2673, 0.2564, 0.2762) (SAM.v2's),
ImageNet torchvision's (0.485, 0.456, 0.406) and (0.229, 0.224, 0.225). The digits are already
standardised per pixel by :func:`samlab.datasets.load_digits` (mean 0, std 1 here); fake data
uses 0.5 and 0.5.

.. note:: SSAM normalises CIFAR-100 with the CIFAR-10 constants; samlab uses CIFAR-100's own.
   The difference is below 0.05 in every channel's mean and std.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "AUGMENTATIONS",
    "IMAGE_DATASETS",
    "IMAGE_DATASET_NAMES",
    "ImageDatasetSpec",
    "get_image_dataset_spec",
    "resolve_image_dataset",
]

#: Training augmentations: none; crop + flip (``RandomResizedCrop`` + flip on ImageNet); and
#: those plus Cutout 16x16 with probability 0.5.
AUGMENTATIONS = ("base", "cutout", "none")


@dataclass(frozen=True)
class ImageDatasetSpec:
    """One image classification dataset.

    Attributes:
        name: canonical name (``cifar10``, ``cifar100``, ``imagenet``, ``digits``, ``fakedata``).
        num_classes: number of classes.
        input_shape: one sample's (C, H, W) as the models see it.
        mean: per-channel mean subtracted by the normalisation.
        std: per-channel standard deviation divided by it.
    """

    name: str
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]


IMAGE_DATASETS: Mapping[str, ImageDatasetSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            ImageDatasetSpec(
                "cifar10",
                10,
                (3, 32, 32),
                (125.3 / 255, 123.0 / 255, 113.9 / 255),
                (63.0 / 255, 62.1 / 255, 66.7 / 255),
            ),
            ImageDatasetSpec(
                "cifar100", 100, (3, 32, 32), (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
            ),
            ImageDatasetSpec(
                "imagenet", 1000, (3, 224, 224), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
            ),
            ImageDatasetSpec("digits", 10, (1, 8, 8), (0.0,), (1.0,)),
            ImageDatasetSpec("fakedata", 10, (3, 32, 32), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        )
    }
)

#: Every accepted spelling (lower case) -> (canonical name, training augmentation).
IMAGE_DATASET_NAMES: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "cifar10": ("cifar10", "base"),
        "cifar10_base": ("cifar10", "base"),
        "cifar10_cutout": ("cifar10", "cutout"),
        "cifar10_cut": ("cifar10", "cutout"),
        "cifar100": ("cifar100", "base"),
        "cifar100_base": ("cifar100", "base"),
        "cifar100_cutout": ("cifar100", "cutout"),
        "cifar100_cut": ("cifar100", "cutout"),
        "imagenet": ("imagenet", "base"),
        "imagenet_base": ("imagenet", "base"),
        "digits": ("digits", "none"),
        "fakedata": ("fakedata", "base"),
    }
)

_SPELLINGS = (
    "cifar10, cifar100, imagenet, digits, fakedata, CIFAR10_base, CIFAR10_cutout, CIFAR10_cut, "
    "CIFAR100_base, CIFAR100_cutout, CIFAR100_cut, ImageNet_base"
)


def resolve_image_dataset(name: str) -> tuple[str, str]:
    """(canonical dataset name, training augmentation) of any accepted spelling.

    ``resolve_image_dataset("CIFAR10_cutout") == ("cifar10", "cutout")``; plain names get
    ``"base"`` (``"none"`` for the 8x8 digits). ``ValueError`` listing the names otherwise.
    """
    try:
        return IMAGE_DATASET_NAMES[str(name).lower()]
    except KeyError:
        raise ValueError(f"unknown image dataset {name!r}; known: {_SPELLINGS}") from None


def get_image_dataset_spec(name: str) -> ImageDatasetSpec:
    """The :class:`ImageDatasetSpec` of ``name`` in any accepted spelling."""
    return IMAGE_DATASETS[resolve_image_dataset(name)[0]]
