"""One dataset at one (seq_len, horizon): read, split, scaled on the train rows, windowed."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from samlab.datasets.timeseries.files import DatasetSpec, find_dataset_file, get_dataset_spec
from samlab.datasets.timeseries.reader import read_cached
from samlab.datasets.timeseries.windows import (
    ForecastData,
    StandardScaler,
    WindowDataset,
    check_positive,
    split_borders,
)


def load_forecast_data(
    name: str,
    horizon: int,
    *,
    seq_len: int = 512,
    data_dir: str | os.PathLike | None = None,
    path: str | os.PathLike | None = None,
) -> ForecastData:
    """Read (cached), split, scale on the train rows and window ``name`` for ``horizon``.

    ``path`` overrides the file search (:func:`find_dataset_file`); ``name`` still selects the
    split rule, the expected channel count and the target column (last). Bad structure or
    values are a ``ValueError`` naming the file (:func:`~samlab.datasets.timeseries.read_series`,
    :func:`standardise`). :attr:`ForecastData.data_sha256` identifies the values read.
    """
    horizon, seq_len = check_positive("horizon", horizon), check_positive("seq_len", seq_len)
    spec = get_dataset_spec(name)
    path = Path(path) if path is not None else find_dataset_file(spec.name, data_dir)
    columns, values = read_cached(path)
    check_target(spec, columns, path)
    try:
        borders = split_borders(spec, len(values), seq_len)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    scaler, scaled = standardise(values, borders, columns, path)
    splits = {}
    for split, (start, end) in borders.items():
        try:
            splits[split] = WindowDataset(scaled[start:end], seq_len, horizon)
        except ValueError as err:
            raise ValueError(f"{path}: {split} split: {err}") from None
    fields = dict(scaler=scaler, borders=borders, path=path, **splits)
    digest = values_sha256(columns, values[: borders["test"][1]])
    return ForecastData(spec.name, list(columns), seq_len, horizon, **fields, data_sha256=digest)


def check_target(spec: DatasetSpec, columns: list[str], path: Path) -> None:
    """The channel count of ``spec`` and its target (``OT``) as the last column."""
    if len(columns) != spec.n_channels:
        raise ValueError(
            f"{path}: {spec.name} has {spec.n_channels} channels, file has {len(columns)}"
        )
    if columns[-1].strip() != spec.target:
        raise ValueError(
            f"{path}: the last column must be the target {spec.target!r} of {spec.name}, the "
            f"header ends with {columns[-1]!r}"
        )


def standardise(
    values: np.ndarray, borders: dict[str, tuple[int, int]], columns: list[str], path: Path
) -> tuple[StandardScaler, torch.Tensor]:
    """The scaler fitted on the train rows and the rows up to the test end, scaled, as float32;
    ``ValueError`` naming the file and column when a statistic or a scaled value is not finite
    (beyond float32's range)."""
    try:
        scaler = StandardScaler().fit(values[: borders["train"][1]], list(columns))
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = scaler.transform(values[: borders["test"][1]]).astype(np.float32)
    finite = np.isfinite(scaled)
    if not finite.all():
        row, column = (int(i) for i in np.argwhere(~finite)[0])
        raise ValueError(
            f"{path}: data row {row + 1}, column {columns[column]!r}: the value "
            f"{values[row, column]:g} is beyond float32's range once standardised with the "
            "train rows' statistics; fix the data"
        )
    return scaler, torch.from_numpy(scaled)


def values_sha256(columns: list[str], values: np.ndarray) -> str:
    """sha256 of the channel names and the float64 values (little-endian, row-major) a run
    reads: what ties a forecasting run to its data (:attr:`ForecastData.data_sha256`)."""
    digest = hashlib.sha256()
    digest.update(("|".join(columns) + f"|{values.shape}|").encode())
    digest.update(np.ascontiguousarray(values, dtype="<f8").tobytes())
    return digest.hexdigest()
