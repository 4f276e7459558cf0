"""Tiny image datasets in the real on-disk formats, for tests (no downloads).

* :func:`write_cifar10` / :func:`write_cifar100`: the "python version" files that torchvision's
  download unpacks (``cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta``;
  ``cifar-100-python/train, test, meta``): pickled dicts with str keys (as Python 2 wrote them),
  ``data`` a uint8 array (N, 3072) in channel-major order, ``labels`` / ``fine_labels`` lists.
* :func:`write_image_folder`: ``ROOT/train/<class>/<i>.png`` and ``ROOT/val/<class>/<i>.png``,
  the ``ImageFolder`` layout of ImageNet.

Import from tests as ``from tests.image_fixtures import write_cifar10`` (``python -m pytest``
puts the repository root on ``sys.path``).
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["write_cifar10", "write_cifar100", "write_image_folder"]


def _dump(path: Path, entry: dict) -> None:
    with open(path, "wb") as handle:
        pickle.dump(entry, handle, protocol=2)


def _draw(n: int, num_classes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = (np.arange(n) % num_classes).astype(np.int64)
    rng.shuffle(labels)
    return data, labels


def write_cifar10(root: str | Path, n_train: int = 10, n_test: int = 4, *, seed: int = 0) -> dict:
    """Write ``n_train`` training images (split over the five batches) and ``n_test`` test
    images under ``root/cifar-10-batches-py``; returns ``{"train": (data, labels), "test":
    (data, labels)}`` with data (N, 3072) uint8 and labels (N,) int64, in file order."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    train, test = _draw(n_train, 10, rng), _draw(n_test, 10, rng)
    for index, part in enumerate(np.array_split(np.arange(n_train), 5), start=1):
        _dump(
            folder / f"data_batch_{index}",
            {
                "batch_label": f"training batch {index} of 5",
                "labels": train[1][part].tolist(),
                "data": train[0][part],
                "filenames": [f"img_{i}.png" for i in part],
            },
        )
    _dump(
        folder / "test_batch",
        {
            "batch_label": "testing batch 1 of 1",
            "labels": test[1].tolist(),
            "data": test[0],
            "filenames": [f"test_{i}.png" for i in range(n_test)],
        },
    )
    names = ["airplane", "automobile", "bird", "cat", "deer"]
    names += ["dog", "frog", "horse", "ship", "truck"]
    _dump(folder / "batches.meta", {"label_names": names, "num_cases_per_batch": 10000})
    return {"train": train, "test": test}


def write_cifar100(root: str | Path, n_train: int = 10, n_test: int = 4, *, seed: int = 0) -> dict:
    """Write ``root/cifar-100-python/{train,test,meta}``; returns the data as
    :func:`write_cifar10` does (labels are the fine labels)."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        data, labels = _draw(n, 100, rng)
        _dump(
            folder / split,
            {
                "filenames": [f"{split}_{i}.png" for i in range(n)],
                "batch_label": f"{split}ing batch 1 of 1",
                "fine_labels": labels.tolist(),
                "coarse_labels": (labels // 5).tolist(),
                "data": data,
            },
        )
        out[split] = (data, labels)
    _dump(
        folder / "meta",
        {
            "fine_label_names": [f"class_{i}" for i in range(100)],
            "coarse_label_names": [f"super_{i}" for i in range(20)],
        },
    )
    return out


def write_image_folder(
    root: str | Path,
    classes: Sequence[str] = ("cat", "dog"),
    per_class: int = 2,
    size: int = 40,
    *,
    splits: Sequence[str] = ("train", "val"),
    seed: int = 0,
) -> Path:
    """Write ``per_class`` random RGB PNGs of ``size`` x ``size`` for each class under
    ``root/<split>/<class>/``; returns ``root``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(root)
    for split in splits:
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(per_class):
                pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{index}.png")
    return root
