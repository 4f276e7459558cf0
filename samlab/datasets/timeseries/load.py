"""One dataset at one (seq_len, horizon): read, split, scaled on the train rows, windowed."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from samlab.datasets.timeseries.files import find_dataset_file, get_dataset_spec
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
    split rule and the expected channel count.
    """
    horizon, seq_len = check_positive("horizon", horizon), check_positive("seq_len", seq_len)
    spec = get_dataset_spec(name)
    path = Path(path) if path is not None else find_dataset_file(spec.name, data_dir)
    columns, values = read_cached(path)
    if len(columns) != spec.n_channels:
        raise ValueError(
            f"{path}: {spec.name} has {spec.n_channels} channels, file has {len(columns)}"
        )
    try:
        borders = split_borders(spec, len(values), seq_len)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    scaler = StandardScaler().fit(values[: borders["train"][1]])
    scaled = torch.from_numpy(scaler.transform(values[: borders["test"][1]]).astype(np.float32))
    splits = {}
    for split, (start, end) in borders.items():
        try:
            splits[split] = WindowDataset(scaled[start:end], seq_len, horizon)
        except ValueError as err:
            raise ValueError(f"{path}: {split} split: {err}") from None
    fields = dict(scaler=scaler, borders=borders, path=path, **splits)
    return ForecastData(spec.name, list(columns), seq_len, horizon, **fields)
