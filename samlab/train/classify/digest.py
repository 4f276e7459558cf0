"""What data a classification run was trained on: :func:`data_digest`, recorded as
``data_sha256`` in ``last.pt``, ``best.pt``, ``config.json`` and ``metrics.json``.

Hashing every pixel a run sees would mean decoding and transforming the whole data set; the
digest hashes what is stored instead, which is cheap and changes whenever the data change:

* ``(inputs, targets)`` tensors and a ``TensorDataset`` (the digits, small in-memory data):
  every value, with :func:`landscape.evaluate.data_sha256` (dtype, shape and bytes);
* a CIFAR data set (:class:`~samlab.datasets.images.cifar.CifarDataset`, any object with
  ``images`` and ``targets`` tensors): the raw uint8 images and the labels as read from the
  files (0.23 s for CIFAR-10's 150 MB training set, measured on a loaded 2-core CPU); the
  augmentation is a config field, so it is not part of the data digest;
* an ``ImageFolder`` (ImageNet; any object with a ``samples`` list of ``(path, class)``):
  the sorted list of file paths relative to its ``root`` with each file's size, modification
  time (ns) and class index -- one ``stat`` per file, not a read; a file replaced in place by
  one of the same size and time is not noticed;
* generated images (:class:`~samlab.datasets.images.fake.FakeImages`, torchvision's
  ``FakeData``): the parameters that generate them (size, shape, classes, seed offset);
* a ``DataLoader``: the digest of its ``dataset``;
* an object with a ``data_sha256`` attribute (a string): that string, so other data sets can
  say what they are;
* anything else: ``None`` -- the run is then not tied to its data (no check on resume).

The digest of a run is the sha256 of the training and the test digests; it is ``None`` when
either is.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch

__all__ = ["DIGEST_FIELD", "data_digest", "split_digest"]

#: the key under which runs record the digest
DIGEST_FIELD = "data_sha256"


def _tensors_digest(inputs: Any, targets: Any) -> str:
    from landscape.evaluate import data_sha256

    return data_sha256([(torch.as_tensor(inputs), torch.as_tensor(targets))])


def _folder_digest(root: Any, samples: list[tuple[str, int]]) -> str:
    digest = hashlib.sha256(b"image-folder|")
    base = Path(str(root))
    for path, label in sorted(samples):
        stat = os.stat(path)
        try:
            name = Path(path).relative_to(base).as_posix()
        except ValueError:
            name = Path(path).as_posix()
        digest.update(f"{name}|{stat.st_size}|{stat.st_mtime_ns}|{int(label)}\n".encode())
    return digest.hexdigest()


def _generated_digest(data: Any) -> str:
    names = ("size", "shape", "image_size", "num_classes", "offset", "random_offset")
    described = {n: repr(getattr(data, n)) for n in names if hasattr(data, n)}
    text = f"generated|{type(data).__name__}|{sorted(described.items())}"
    return hashlib.sha256(text.encode()).hexdigest()


def split_digest(data: Any) -> str | None:
    """The digest of one split (see the module's documentation), or ``None``."""
    from torch.utils.data import DataLoader, TensorDataset

    if isinstance(data, DataLoader):
        return split_digest(data.dataset)
    recorded = getattr(data, DIGEST_FIELD, None)
    if isinstance(recorded, str):
        return recorded
    if isinstance(data, TensorDataset) and len(data.tensors) == 2:
        return _tensors_digest(*data.tensors)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return _tensors_digest(*data)
    images, targets = getattr(data, "images", None), getattr(data, "targets", None)
    if isinstance(images, torch.Tensor) and targets is not None:
        return _tensors_digest(images, targets)
    samples = getattr(data, "samples", None)
    if isinstance(samples, list) and hasattr(data, "root"):
        return _folder_digest(data.root, samples)
    if type(data).__name__ in ("FakeImages", "FakeData"):
        return _generated_digest(data)
    return None


def data_digest(train_data: Any, test_data: Any) -> str | None:
    """sha256 of a run's training and test data (``None`` when either cannot be digested)."""
    parts = [split_digest(train_data), split_digest(test_data)]
    if None in parts:
        return None
    return hashlib.sha256(f"train|{parts[0]}|test|{parts[1]}".encode()).hexdigest()
