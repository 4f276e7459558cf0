"""Dataset readers for samlab experiments: the 8x8 digits (:mod:`samlab.datasets.digits`),
image classification data -- CIFAR-10/100, ImageNet folders, the digits, fake data
(:mod:`samlab.datasets.images`) -- and the long-horizon forecasting benchmarks
(:mod:`samlab.datasets.timeseries`)."""

from .digits import DigitsData, digits_eval_data, digits_loaders, load_digits
from .images import (
    Cutout,
    ImageDatasetSpec,
    data_root,
    get_image_dataset_spec,
    has_cifar,
    image_eval_data,
    load_image_dataset,
    resolve_image_dataset,
)
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
    "Cutout",
    "ImageDatasetSpec",
    "data_root",
    "get_image_dataset_spec",
    "has_cifar",
    "image_eval_data",
    "load_image_dataset",
    "resolve_image_dataset",
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
