"""The digits split, its standardisation and the loaders."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from samlab.datasets import DigitsData, digits_loaders, load_digits


@pytest.fixture(scope="module")
def data() -> DigitsData:
    return load_digits(seed=0)


def test_shapes_and_dtypes(data: DigitsData) -> None:
    assert data.x_train.shape[1:] == (1, 8, 8) and data.x_test.shape[1:] == (1, 8, 8)
    assert data.x_train.dtype == torch.float32 and data.x_test.dtype == torch.float32
    assert data.y_train.dtype == torch.int64 and data.y_test.dtype == torch.int64
    assert data.y_train.shape == (len(data.x_train),)
    assert data.y_test.shape == (len(data.x_test),)
    assert data.mean.shape == data.std.shape == (1, 8, 8)
    assert data.seed == 0


def test_split_sizes_add_up(data: DigitsData) -> None:
    assert len(data.y_train) + len(data.y_test) == 1797
    assert abs(len(data.y_test) - 0.2 * 1797) <= 10


def test_split_is_stratified(data: DigitsData) -> None:
    train_counts = torch.bincount(data.y_train, minlength=10)
    test_counts = torch.bincount(data.y_test, minlength=10)
    total = train_counts + test_counts
    assert (test_counts > 0).all()
    # Each class holds out round(0.2 * class size) images: off by at most half an image.
    assert ((test_counts - 0.2 * total).abs() <= 0.5).all()


def test_frozen(data: DigitsData) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.seed = 1  # type: ignore[misc]


def test_standardised_with_training_rows_only(data: DigitsData) -> None:
    varying = data.std.flatten() != 1  # pixels that were constant on the train rows keep std 1
    assert varying.sum() > 50
    train = data.x_train.double().reshape(len(data.x_train), 64)
    test = data.x_test.double().reshape(len(data.x_test), 64)
    torch.testing.assert_close(
        train.mean(0), torch.zeros(64, dtype=torch.float64), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        train.std(0, unbiased=False)[varying],
        torch.ones(int(varying.sum()), dtype=torch.float64),
        atol=1e-5,
        rtol=0,
    )
    # The test rows were not used: their statistics differ from 0 and 1.
    assert test.mean(0).abs().max() > 0.05
    assert (test.std(0, unbiased=False)[varying] - 1).abs().max() > 0.05
    # And the raw pixels are recovered with the recorded statistics (0..16 integers).
    raw = data.x_train * data.std + data.mean
    torch.testing.assert_close(raw, raw.round(), atol=1e-4, rtol=0)
    assert raw.min() >= -1e-4 and raw.max() <= 16 + 1e-4


def test_no_nan_from_constant_pixels(data: DigitsData) -> None:
    assert torch.isfinite(data.x_train).all() and torch.isfinite(data.x_test).all()
    assert (data.std > 0).all()


def test_same_seed_same_split(data: DigitsData) -> None:
    again = load_digits(seed=0)
    assert torch.equal(again.x_train, data.x_train) and torch.equal(again.y_test, data.y_test)


def test_different_seed_different_split(data: DigitsData) -> None:
    other = load_digits(seed=1)
    assert other.seed == 1
    assert len(other.y_test) == len(data.y_test)  # stratification fixes the sizes
    assert not torch.equal(other.x_test, data.x_test)


def test_dtype_and_fraction_arguments() -> None:
    data = load_digits(seed=0, test_fraction=0.5, dtype=torch.float64)
    assert data.x_train.dtype == torch.float64 and data.mean.dtype == torch.float64
    assert abs(len(data.y_test) - len(data.y_train)) <= 10


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_bad_test_fraction(fraction: float) -> None:
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits(test_fraction=fraction)
    with pytest.raises(ValueError, match="test_fraction"):
        digits_loaders(test_fraction=fraction)


def test_tiny_test_fraction_that_empties_a_class_is_rejected() -> None:
    with pytest.raises(ValueError, match="empty"):
        load_digits(test_fraction=0.001)


@pytest.mark.parametrize("batch_size", [0, -3, 2.5])
def test_bad_batch_size(batch_size) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        digits_loaders(batch_size)


def test_non_float_dtype_rejected() -> None:
    with pytest.raises(ValueError, match="floating"):
        load_digits(dtype=torch.int64)


def test_loaders_yield_right_batches(data: DigitsData) -> None:
    train_loader, test_loader = digits_loaders(batch_size=32, seed=0)
    x, y = next(iter(train_loader))
    assert x.shape == (32, 1, 8, 8) and x.dtype == torch.float32
    assert y.shape == (32,) and y.dtype == torch.int64
    assert sum(len(y) for _, y in train_loader) == len(data.y_train)
    assert sum(len(y) for _, y in test_loader) == len(data.y_test)
    # The test loader does not shuffle; it walks the test set in order.
    x_test, y_test = next(iter(test_loader))
    assert torch.equal(x_test, data.x_test[:32]) and torch.equal(y_test, data.y_test[:32])


def test_loaders_shuffle_reproducibly() -> None:
    first, _ = digits_loaders(batch_size=16, seed=3)
    second, _ = digits_loaders(batch_size=16, seed=3)
    assert torch.equal(next(iter(first))[1], next(iter(second))[1])
    # Consecutive epochs are shuffled differently.
    epoch_one = torch.cat([y for _, y in first])
    epoch_two = torch.cat([y for _, y in first])
    assert not torch.equal(epoch_one, epoch_two)


def test_digits_eval_data_is_the_training_split():
    from samlab.datasets import digits_eval_data

    data = load_digits(seed=3)
    inputs, labels = digits_eval_data(seed=3)
    assert torch.equal(inputs, data.x_train) and torch.equal(labels, data.y_train)
    first, first_labels = digits_eval_data(seed=3, limit=10)
    assert torch.equal(first, data.x_train[:10]) and torch.equal(first_labels, data.y_train[:10])
    with pytest.raises(ValueError, match="limit must be a positive integer"):
        digits_eval_data(limit=0)
