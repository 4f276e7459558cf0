"""Dataset readers for samlab experiments."""

from typing import TYPE_CHECKING

from .digits import DigitsData, digits_eval_data, digits_loaders, load_digits

if TYPE_CHECKING:
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


def __getattr__(name: str):
    """The forecasting names load on first use (PEP 562): importing them here eagerly would make
    ``python -m samlab.datasets.timeseries`` find its module already imported and runpy warn."""
    if name in __all__:
        from . import timeseries

        return getattr(timeseries, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
