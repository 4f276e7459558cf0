"""CIFAR-10 and CIFAR-100 from their "python version" files (Krizhevsky 2009).

The archives from https://www.cs.toronto.edu/~kriz/cifar.html unpack to

* ``cifar-10-batches-py/``: ``data_batch_1`` .. ``data_batch_5`` (10,000 images each) and
  ``test_batch`` (10,000), plus ``batches.meta`` (``label_names``);
* ``cifar-100-python/``: ``train`` (50,000) and ``test`` (10,000), plus ``meta``
  (``fine_label_names``).

Each file is a pickled dict (written by Python 2; read with ``encoding="latin1"``) whose
``data`` is a uint8 array (N, 3072) -- 1024 red, then 1024 green, then 1024 blue values of a
32x32 image in row-major order -- and whose ``labels`` (CIFAR-10) or ``fine_labels`` (CIFAR-100)
is a list of N ints. This is the layout torchvision's ``CIFAR10``/``CIFAR100`` read; samlab reads
it itself so that small files in the same format (the tests') load too (torchvision checks
the full files' MD5 sums), and uses torchvision only to download (:func:`download_cifar`).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = [
    "CIFAR_LAYOUTS",
    "CifarDataset",
    "CifarLayout",
    "download_cifar",
    "missing_cifar_files",
    "read_cifar",
]


@dataclass(frozen=True)
class CifarLayout:
    """Where one CIFAR variant's files live under the data root and what they hold."""

    title: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str


CIFAR_LAYOUTS = {
    "cifar10": CifarLayout(
        "CIFAR-10",
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        "batches.meta",
        "labels",
        "label_names",
    ),
    "cifar100": CifarLayout(
        "CIFAR-100",
        "cifar-100-python",
        ("train",),
        ("test",),
        "meta",
        "fine_labels",
        "fine_label_names",
    ),
}


def _layout(name: str) -> CifarLayout:
    try:
        return CIFAR_LAYOUTS[name]
    except KeyError:
        raise ValueError(f"unknown CIFAR variant {name!r}; known: cifar10, cifar100") from None


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as handle:
        entry = pickle.load(handle, encoding="latin1")
    if not isinstance(entry, dict):
        raise ValueError(f"{path} is not a CIFAR batch (a pickled dict)")
    # Python-2 pickles load with str keys; files re-pickled by Python 3 may have bytes keys.
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}


def missing_cifar_files(name: str, split: str, root: Path) -> list[Path]:
    """The files of ``split`` ("train"/"test") of ``name`` that are not under ``root``."""
    layout = _layout(name)
    files = layout.train_files if split == "train" else layout.test_files
    return [root / layout.folder / f for f in files if not (root / layout.folder / f).is_file()]


def read_cifar(name: str, split: str, root: Path) -> tuple[Tensor, Tensor, list[str]]:
    """Images (N, 3, 32, 32) uint8, labels (N,) int64 and class names of ``split``.

    ``FileNotFoundError`` if a file is missing (see :func:`missing_cifar_files`), ``ValueError``
    if one is not in the format above.
    """
    layout = _layout(name)
    folder = root / layout.folder
    files = layout.train_files if split == "train" else layout.test_files
    images, labels = [], []
    for file in files:
        path = folder / file
        if not path.is_file():
            raise FileNotFoundError(str(path))
        entry = _unpickle(path)
        if "data" not in entry or layout.label_key not in entry:
            raise ValueError(
                f"{path} lacks 'data' or {layout.label_key!r}: not a {layout.title} file"
            )
        data = np.asarray(entry["data"], dtype=np.uint8)
        targets = np.asarray(entry[layout.label_key], dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3072 or len(targets) != len(data):
            raise ValueError(
                f"{path}: expected data (N, 3072) and N labels, got data {data.shape} and "
                f"{len(targets)} labels"
            )
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(targets)
    meta = folder / layout.meta_file
    classes = [str(c) for c in _unpickle(meta)[layout.names_key]] if meta.is_file() else []
    image_tensor = torch.from_numpy(np.concatenate(images))
    label_tensor = torch.from_numpy(np.concatenate(labels))
    if not classes:
        classes = [str(i) for i in range(int(label_tensor.max()) + 1 if len(label_tensor) else 0)]
    return image_tensor, label_tensor, classes


def download_cifar(name: str, root: Path) -> None:
    """Download and unpack ``name`` into ``root`` with torchvision (needs internet)."""
    from torchvision import datasets

    root.mkdir(parents=True, exist_ok=True)
    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    cls(root=str(root), train=True, download=True)


class CifarDataset(Dataset):
    """CIFAR images as uint8 (3, 32, 32) tensors, returned as ``(transform(image), label)``.

    Attributes: ``images`` (N, 3, 32, 32) uint8, ``targets`` (N,) int64, ``classes``.
    """

    def __init__(
        self,
        images: Tensor,
        targets: Tensor,
        classes: list[str],
        transform: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} labels")
        self.images = images
        self.targets = targets
        self.classes = classes
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.targets[index])
