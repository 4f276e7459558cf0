"""Long-horizon forecasting benchmarks (ETT, weather, exchange_rate, electricity, traffic).

Reads the Autoformer-format CSVs (first column ``date``, then one numeric column per channel,
the last usually ``OT``; plain or ``.gz``) and cuts them the way SAMformer, TSMixer and Informer
do (the split rules below; the window counts they give are checked in the tests):

* ETTh1/ETTh2: 12/4/4 months of 30 days of hours for train/val/test; ETTm1/ETTm2 the same at
  15 minutes (x4); all others 70/10/20 with ``int()`` rounding (val takes the remainder).
* The val and test segments start ``seq_len`` rows early, so their first window has a full
  look-back.
* A per-column :class:`StandardScaler` is fitted on the train rows only and applied to every
  split; windows have stride 1, input rows ``[i, i+L)`` and target rows ``[i+L, i+L+H)``.

Windows are time-major and channels-last: ``x`` is ``(L, D)``, ``y`` is ``(H, D)``.

Command line (``__main__.py``)::

    python -m samlab.datasets.timeseries --info ETTh1 [--data-dir DIR]
    python -m samlab.datasets.timeseries --download weather [--data-dir DIR]

Modules: ``files`` (the dataset specs, the file search, :func:`download`), ``reader`` (the CSV
parser and its cache), ``windows`` (the splits, the scaler, the windows) and ``load``
(:func:`load_forecast_data`).
"""

from samlab.datasets.timeseries.files import (
    EMBEDDED_DATA_DIR,
    FORECAST_DATASETS,
    HORIZONS,
    DatasetSpec,
    download,
    download_dir,
    find_dataset_file,
    get_dataset_spec,
)
from samlab.datasets.timeseries.load import load_forecast_data
from samlab.datasets.timeseries.reader import read_series
from samlab.datasets.timeseries.windows import (
    ForecastData,
    StandardScaler,
    WindowDataset,
    split_borders,
)

__all__ = [
    "EMBEDDED_DATA_DIR",
    "FORECAST_DATASETS",
    "HORIZONS",
    "DatasetSpec",
    "ForecastData",
    "StandardScaler",
    "WindowDataset",
    "download",
    "download_dir",
    "find_dataset_file",
    "get_dataset_spec",
    "load_forecast_data",
    "read_series",
    "split_borders",
]
