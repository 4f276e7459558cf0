"""Dataset readers for samlab experiments: the 8x8 digits (:mod:`samlab.datasets.digits`) and
the long-horizon forecasting benchmarks (:mod:`samlab.datasets.timeseries`)."""

from .digits import DigitsData, digits_eval_data, digits_loaders, load_digits
from .timeseries import (
    FORECAST_DATASETS,
    DatasetSpec,
    ForecastData,
    StandardScaler,
    WindowDataset,
    find_dataset_file,
    get_dataset_spec,
    load_forecast_data,
    read_series,
    split_borders,
)

__all__ = [
    "DigitsData",
    "digits_eval_data",
    "digits_loaders",
    "load_digits",
    "FORECAST_DATASETS",
    "DatasetSpec",
    "ForecastData",
    "StandardScaler",
    "WindowDataset",
    "find_dataset_file",
    "get_dataset_spec",
    "load_forecast_data",
    "read_series",
    "split_borders",
]
