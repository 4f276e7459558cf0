"""Where image data lives and how a dataset is assembled: :func:`data_root` and
:func:`load_image_dataset`.

**Data root.** ``root`` when given (the CLIs' ``--data-dir``/``--datadir``), else the first
entry of the environment variable ``SAMLAB_DATA`` (a path list like ``PATH``), else ``./data``
relative to the current directory. Under it:

* CIFAR-10: ``ROOT/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``;
* CIFAR-100: ``ROOT/cifar-100-python/{train, test, meta}`` -- the folders torchvision's
  ``--download`` (``download=True``) creates, so ``ROOT`` is the folder you would pass to
  ``torchvision.datasets.CIFAR10(root=...)``;
* ImageNet: ``ROOT/imagenet/{train,val}/<class>/<image>`` or ``ROOT/{train,val}/...`` (the
  ``--datadir`` of SSAM), one folder per class as ``torchvision.datasets.ImageFolder`` reads
  them; ImageNet cannot be downloaded automatically.

The digits ship with scikit-learn and fake data is generated, so neither needs files.

:func:`has_cifar` tells whether a CIFAR copy is there without reading it (to pick CIFAR-10 when
the user has it, the digits otherwise), and :func:`image_eval_data` gives a fixed batch of a
split without augmentation, as tensors (for Hessian measures and loss surfaces).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

from ..digits import load_digits
from .cifar import CIFAR_LAYOUTS, CifarDataset, download_cifar, missing_cifar_files, read_cifar
from .fake import FakeImages
from .specs import AUGMENTATIONS, ImageDatasetSpec, get_image_dataset_spec, resolve_image_dataset
from .transforms import imagenet_transform, tensor_transform

__all__ = ["DEFAULT_FAKE_SIZES", "data_root", "has_cifar", "image_eval_data", "load_image_dataset"]

#: Samples of ``fakedata`` per split when ``fake_size`` is not given.
DEFAULT_FAKE_SIZES = {"train": 1024, "test": 256}

_SPLITS = ("train", "test")


def data_root(root: str | os.PathLike | None = None) -> Path:
    """``root``, else the first entry of ``$SAMLAB_DATA``, else ``./data`` (not created)."""
    if root is not None and str(root) != "":
        return Path(root).expanduser()
    env = os.environ.get("SAMLAB_DATA", "").split(os.pathsep)[0]
    return Path(env).expanduser() if env else Path("data")


def _where(root: str | os.PathLike | None) -> str:
    if root is not None and str(root) != "":
        return "the data dir"
    return "$SAMLAB_DATA" if os.environ.get("SAMLAB_DATA") else "the default ./data"


def _load_cifar(
    name: str, split: str, root_arg, augment: str, download: bool, image_size: int | None
) -> CifarDataset:
    spec = get_image_dataset_spec(name)
    if image_size not in (None, 32):
        raise ValueError(f"{name} images are 32x32; image_size={image_size} applies to fake data")
    root = data_root(root_arg)
    layout = CIFAR_LAYOUTS[name]
    if missing_cifar_files(name, split, root) and download:
        download_cifar(name, root)
    missing = missing_cifar_files(name, split, root)
    if missing:
        names = ", ".join(p.name for p in missing)
        raise FileNotFoundError(
            f"{layout.title} {split} data not found in {(root / layout.folder).resolve()} "
            f"({_where(root_arg)}): missing {names}; pass --download (download=True) to fetch "
            f"it, or --data-dir DIR (root=DIR, or set SAMLAB_DATA) naming the folder that "
            f"holds {layout.folder}/"
        )
    images, targets, classes = read_cifar(name, split, root)
    transform = tensor_transform(augment, spec.mean, spec.std)
    return CifarDataset(images, targets, classes, transform)


def _imagenet_folder(root: Path, split: str) -> Path:
    sub = "train" if split == "train" else "val"
    candidates = [root / "imagenet" / sub, root / sub]
    for folder in candidates:
        if folder.is_dir():
            return folder
    tried = ", ".join(str(c.resolve()) for c in candidates)
    raise FileNotFoundError(
        f"ImageNet {split} folder not found: tried {tried}; ImageNet cannot be downloaded "
        f"automatically: put its train/ and val/ class folders "
        f"there, or pass --data-dir DIR (root=DIR, or set SAMLAB_DATA) naming the folder that "
        f"holds them"
    )


def _load_imagenet(
    split: str, root_arg, augment: str, download: bool, image_size: int | None
) -> Dataset:
    from torchvision.datasets import ImageFolder

    if download:
        raise ValueError(
            "ImageNet cannot be downloaded automatically (it needs a licence from "
            "image-net.org); drop --download and pass --data-dir DIR with train/ and val/"
        )
    spec = get_image_dataset_spec("imagenet")
    folder = _imagenet_folder(data_root(root_arg), split)
    size = image_size or spec.input_shape[1]
    return ImageFolder(
        str(folder), transform=imagenet_transform(augment, spec.mean, spec.std, image_size=size)
    )


def _load_digits(split: str, augment: str, image_size: int | None) -> TensorDataset:
    if augment != "none":
        raise ValueError(f"the 8x8 digits take no augmentation (augment='none'), got {augment!r}")
    if image_size not in (None, 8):
        raise ValueError(f"the digits are 8x8; image_size={image_size} applies to fake data")
    data = load_digits()
    if split == "train":
        return TensorDataset(data.x_train, data.y_train)
    return TensorDataset(data.x_test, data.y_test)


def _fake(
    spec: ImageDatasetSpec, split: str, augment: str, image_size: int | None, size: int
) -> Dataset:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"fake_size must be a positive integer, got {size!r}")
    channels, height, _ = spec.input_shape
    side = image_size or height
    # Test images are drawn from other seeds than the training images.
    offset = 0 if split == "train" else 10_000_000
    if spec.name == "imagenet":
        from torchvision.datasets import FakeData

        transform = imagenet_transform(augment, spec.mean, spec.std, image_size=side)
        shape = (channels, side, side)
        return FakeData(size, shape, spec.num_classes, transform, random_offset=offset)
    if spec.name == "digits" and augment != "none":
        raise ValueError(f"the 8x8 digits take no augmentation, got augment={augment!r}")
    transform = tensor_transform(augment, spec.mean, spec.std)
    return FakeImages(size, (channels, side, side), spec.num_classes, transform, offset=offset)


def load_image_dataset(
    name: str,
    split: str,
    *,
    root: str | os.PathLike | None = None,
    augment: str | None = None,
    download: bool = False,
    image_size: int | None = None,
    fake_size: int | None = None,
) -> Dataset:
    """The ``split`` ("train" or "test") of the image dataset ``name`` (any spelling of
    :func:`~samlab.datasets.images.resolve_image_dataset`) as a map-style ``Dataset`` of
    ``(image tensor (C, H, W) float32, int label)``.

    ``augment`` (``"base"``, ``"cutout"``, ``"none"``; see
    :mod:`samlab.datasets.images.transforms`) defaults to the name's augmentation for
    ``"train"`` and to ``"none"`` for ``"test"``. ``root``: see :func:`data_root`.
    ``download=True`` lets torchvision fetch CIFAR (never used by the tests; ImageNet cannot be
    downloaded). ``image_size`` sets ImageNet's crop (default 224) and fake images' side.
    ``fake_size=N`` returns N generated images shaped and normalised like ``name``'s data
    (:class:`~samlab.datasets.images.fake.FakeImages`; torchvision's ``FakeData`` for ImageNet),
    for smoke runs and benchmarks without files; ``fakedata`` itself is CIFAR-10 sized with
    ``DEFAULT_FAKE_SIZES`` samples unless ``fake_size`` says otherwise.

    Missing files raise ``FileNotFoundError`` with one line naming them and the fix
    (``--download`` or ``--data-dir``).
    """
    canonical, default_augment = resolve_image_dataset(name)
    if split not in _SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if augment is None:
        augment = default_augment if split == "train" else "none"
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {', '.join(AUGMENTATIONS)}, got {augment!r}")
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1
    ):
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    spec = get_image_dataset_spec(canonical)
    if canonical == "fakedata" or fake_size is not None:
        size = fake_size if fake_size is not None else DEFAULT_FAKE_SIZES[split]
        return _fake(spec, split, augment, image_size, size)
    if canonical in CIFAR_LAYOUTS:
        return _load_cifar(canonical, split, root, augment, download, image_size)
    if canonical == "imagenet":
        return _load_imagenet(split, root, augment, download, image_size)
    return _load_digits(split, augment, image_size)


def has_cifar(name: str = "cifar10", root: str | os.PathLike | None = None) -> bool:
    """Whether every training and test file of the CIFAR variant ``name`` (``cifar10`` or
    ``cifar100``, any spelling of :func:`resolve_image_dataset`) is under :func:`data_root`
    ``(root)``: ``ROOT/cifar-10-batches-py/{data_batch_1..5, test_batch}`` or
    ``ROOT/cifar-100-python/{train, test}``.

    Only checks that the files exist (reads none, downloads nothing), so it is cheap enough to
    decide between CIFAR-10 and the embedded digits before any work; a damaged file still
    fails later, in :func:`load_image_dataset`, with a message naming it.
    """
    canonical = resolve_image_dataset(name)[0]
    if canonical not in CIFAR_LAYOUTS:
        raise ValueError(f"{name!r} is not a CIFAR variant; has_cifar takes cifar10 or cifar100")
    folder = data_root(root)
    return not any(missing_cifar_files(canonical, split, folder) for split in _SPLITS)


def image_eval_data(
    name: str,
    limit: int | None = None,
    *,
    split: str = "train",
    root: str | os.PathLike | None = None,
) -> tuple[Tensor, Tensor]:
    """The first ``limit`` samples (all when None) of ``split`` of the image dataset ``name``
    as ``(inputs (N, C, H, W) float32, labels (N,) int64)`` tensors, normalised as for training
    but never augmented: a fixed batch to measure a trained model on (Hessian eigenvalues and
    trace, loss surfaces), the same on every call. For the digits it equals
    :func:`samlab.datasets.digits_eval_data` ``(seed=0, limit=limit)``.

    ``root`` and the errors for missing files: see :func:`load_image_dataset`.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    dataset = load_image_dataset(name, split, root=root, augment="none")
    count = len(dataset) if limit is None else min(limit, len(dataset))
    samples = [dataset[index] for index in range(count)]
    inputs = torch.stack([image for image, _ in samples])
    labels = torch.tensor([int(label) for _, label in samples], dtype=torch.int64)
    return inputs, labels
