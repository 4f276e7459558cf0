"""scikit-learn's 8x8 handwritten digits as standardised tensors and DataLoaders.

The data (1,797 images of 8x8 pixels with values 0..16, ten classes, from the UCI "Optical
Recognition of Handwritten Digits" set) ships inside scikit-learn, so nothing is downloaded.

The split is stratified: every class is shuffled with a ``torch.Generator`` seeded by ``seed``
and its first ``round(test_fraction * class_size)`` images go to the test set, so both sets keep
the class proportions. Standardisation is pixel-wise: each of the 64 pixels gets its own mean and
standard deviation, computed on the training rows only and applied to both sets. Pixels that are
constant on the training rows (std 0, e.g. some corners) are divided by 1 instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, TensorDataset

__all__ = ["DigitsData", "digits_eval_data", "digits_loaders", "load_digits"]

NUM_SAMPLES = 1797
NUM_CLASSES = 10


@dataclass(frozen=True)
class DigitsData:
    """A seeded, standardised train/test split of the 8x8 digits.

    Attributes:
        x_train: (N_train, 1, 8, 8) standardised images.
        y_train: (N_train,) int64 labels in 0..9.
        x_test: (N_test, 1, 8, 8) images standardised with the training statistics.
        y_test: (N_test,) int64 labels.
        mean: (1, 8, 8) per-pixel mean of the raw training images.
        std: (1, 8, 8) per-pixel standard deviation of the raw training images (population,
            ``unbiased=False``), with 1 where it was 0.
        seed: the seed that drew the split.
        test_fraction: the requested fraction of each class held out.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    seed: int
    test_fraction: float


def _check_test_fraction(test_fraction: float) -> None:
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}")


def _stratified_split(
    labels: torch.Tensor, test_fraction: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and test row indices (each sorted) holding out ``test_fraction`` of each class."""
    train_parts, test_parts = [], []
    for label in torch.unique(labels).tolist():
        rows = torch.nonzero(labels == label).flatten()
        rows = rows[torch.randperm(len(rows), generator=generator)]
        num_test = round(test_fraction * len(rows))
        if num_test == 0 or num_test == len(rows):
            raise ValueError(
                f"test_fraction {test_fraction} leaves class {label} ({len(rows)} images) "
                "with an empty train or test part"
            )
        test_parts.append(rows[:num_test])
        train_parts.append(rows[num_test:])
    return torch.cat(train_parts).sort().values, torch.cat(test_parts).sort().values


def load_digits(
    *, test_fraction: float = 0.2, seed: int = 0, dtype: torch.dtype = torch.float32
) -> DigitsData:
    """Load the digits, split them (stratified, seeded) and standardise them per pixel.

    Returns a :class:`DigitsData` with images shaped (N, 1, 8, 8) in ``dtype`` and int64
    labels; the default split has 1,438 training and 359 test images.
    """
    _check_test_fraction(test_fraction)
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
    from sklearn.datasets import load_digits as _sklearn_load_digits

    raw = _sklearn_load_digits()
    images = torch.as_tensor(raw.data, dtype=torch.float64).reshape(-1, 1, 8, 8)
    labels = torch.as_tensor(raw.target, dtype=torch.int64)

    generator = torch.Generator().manual_seed(seed)
    train_rows, test_rows = _stratified_split(labels, test_fraction, generator)

    train_images = images[train_rows]
    mean = train_images.mean(dim=0)
    std = train_images.std(dim=0, unbiased=False)
    std = torch.where(std > 0, std, torch.ones_like(std))

    def standardise(x: torch.Tensor) -> torch.Tensor:
        return ((x - mean) / std).to(dtype)

    return DigitsData(
        x_train=standardise(train_images),
        y_train=labels[train_rows],
        x_test=standardise(images[test_rows]),
        y_test=labels[test_rows],
        mean=mean.to(dtype),
        std=std.to(dtype),
        seed=seed,
        test_fraction=test_fraction,
    )


def digits_loaders(
    batch_size: int = 64, *, seed: int = 0, test_fraction: float = 0.2
) -> tuple[DataLoader, DataLoader]:
    """Train and test DataLoaders over :func:`load_digits` tensors.

    The training loader reshuffles every epoch with a ``torch.Generator`` seeded by ``seed``
    (the same seed that draws the split), so two calls with the same arguments yield the same
    batches in the same order; the test loader does not shuffle. Batches are
    ((B, 1, 8, 8) float32, (B,) int64); the last batch may be smaller.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    data = load_digits(test_fraction=test_fraction, seed=seed)
    train_loader = DataLoader(
        TensorDataset(data.x_train, data.y_train),
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    test_loader = DataLoader(
        TensorDataset(data.x_test, data.y_test), batch_size=batch_size, shuffle=False
    )
    return train_loader, test_loader


def digits_eval_data(seed: int = 0, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The training digits of :func:`load_digits` as ``(inputs (N, 1, 8, 8) float32, labels (N,)
    int64)``: the data a model trained on them is evaluated on (loss surfaces, sharpness).

    The same split and standardisation as ``load_digits(seed=seed)``; ``limit`` keeps the first
    ``limit`` rows (the demo's smoke profile trains on the first 512). Deterministic, so every MPI
    rank gets the same tensors. The landscape command line takes it as
    ``--data samlab.datasets:digits_eval_data`` (keywords through ``--data_kwargs``).
    """
    data = load_digits(seed=seed)
    inputs, targets = data.x_train, data.y_train
    if limit is not None:
        if int(limit) < 1:
            raise ValueError(f"limit must be a positive integer, got {limit!r}")
        inputs, targets = inputs[: int(limit)], targets[: int(limit)]
    return inputs, targets
