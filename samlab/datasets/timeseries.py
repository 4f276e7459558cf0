"""Long-horizon forecasting benchmarks (ETT, weather, exchange_rate, electricity, traffic).

Reads the Autoformer-format CSVs (first column ``date``, then one numeric column per channel,
the last usually ``OT``; plain or ``.gz``) and cuts them the way SAMformer, TSMixer and Informer
do (see ``shared/data/README.md``):

* ETTh1/ETTh2: 12/4/4 months of 30 days of hours for train/val/test; ETTm1/ETTm2 the same at
  15 minutes (x4); all others 70/10/20 with ``int()`` rounding (val takes the remainder).
* The val and test segments start ``seq_len`` rows early, so their first window has a full
  look-back.
* A per-column :class:`StandardScaler` is fitted on the train rows only and applied to every
  split; windows have stride 1, input rows ``[i, i+L)`` and target rows ``[i+L, i+L+H)``.

Windows are time-major and channels-last: ``x`` is ``(L, D)``, ``y`` is ``(H, D)``.

Command line::

    python -m samlab.datasets.timeseries --info ETTh1 [--data-dir DIR]
    python -m samlab.datasets.timeseries --download weather [--data-dir DIR]

The code: this module holds :func:`load_forecast_data` and the command line (:func:`main`). The
dataset specs, the file search and :func:`download` (``_timeseries_files.py``), the CSV reader
(``_timeseries_csv.py``) and the splits, the scaler and the windows (``_timeseries_windows.py``)
are defined in private modules beside it and re-exported here; patch a name where it is defined
(the file search reads ``_timeseries_files.EMBEDDED_DATA_DIR``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

# Defined in the private modules, importable from here as before.
from samlab.datasets._timeseries_csv import _CACHE as _CACHE
from samlab.datasets._timeseries_csv import _locate_bad_cell as _locate_bad_cell
from samlab.datasets._timeseries_csv import _read_cached
from samlab.datasets._timeseries_csv import _read_lines as _read_lines
from samlab.datasets._timeseries_csv import read_series as read_series
from samlab.datasets._timeseries_files import _ETT_URL as _ETT_URL
from samlab.datasets._timeseries_files import _PILE_URL as _PILE_URL
from samlab.datasets._timeseries_files import EMBEDDED_DATA_DIR as EMBEDDED_DATA_DIR
from samlab.datasets._timeseries_files import FORECAST_DATASETS as FORECAST_DATASETS
from samlab.datasets._timeseries_files import DatasetSpec as DatasetSpec
from samlab.datasets._timeseries_files import _match_in as _match_in
from samlab.datasets._timeseries_files import _search_dirs as _search_dirs
from samlab.datasets._timeseries_files import _spec as _spec
from samlab.datasets._timeseries_files import (
    download,
    download_dir,
    find_dataset_file,
    get_dataset_spec,
)
from samlab.datasets._timeseries_windows import _HOURS_PER_MONTH as _HOURS_PER_MONTH
from samlab.datasets._timeseries_windows import (
    ForecastData,
    StandardScaler,
    WindowDataset,
    _check_positive,
    split_borders,
)

__all__ = [
    "FORECAST_DATASETS",
    "DatasetSpec",
    "ForecastData",
    "StandardScaler",
    "WindowDataset",
    "download",
    "find_dataset_file",
    "get_dataset_spec",
    "load_forecast_data",
    "read_series",
    "split_borders",
]

HORIZONS = (96, 192, 336, 720)


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
    horizon, seq_len = _check_positive("horizon", horizon), _check_positive("seq_len", seq_len)
    spec = get_dataset_spec(name)
    path = Path(path) if path is not None else find_dataset_file(spec.name, data_dir)
    columns, values = _read_cached(path)
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


def _print_info(name: str, data_dir, seq_len: int) -> None:
    spec = get_dataset_spec(name)
    path = find_dataset_file(spec.name, data_dir)
    columns, values = _read_cached(path)
    borders = split_borders(spec, len(values), seq_len)
    print(f"{spec.name}: {path}")
    print(f"rows {len(values)}, {len(columns)} channels: {', '.join(columns)}")
    print(
        f"split {spec.split}, seq_len {seq_len}: "
        + ", ".join(f"{k} [{a}, {b}) = {b - a} rows" for k, (a, b) in borders.items())
    )
    for h in HORIZONS:
        counts = [max(b - a - seq_len - h + 1, 0) for a, b in borders.values()]
        print(f"H={h}: windows train/val/test = " + "/".join(map(str, counts)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m samlab.datasets.timeseries", description=__doc__.split("\n\n")[0]
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--download", metavar="NAME", help="fetch a dataset's CSV")
    action.add_argument("--info", metavar="NAME", help="rows, columns, splits, window counts")
    parser.add_argument("--data-dir", help="folder (default: $SAMLAB_DATA, else repo data/)")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file")
    args = parser.parse_args(argv)
    try:
        if args.download:
            print(download(args.download, download_dir(args.data_dir), overwrite=args.overwrite))
        else:
            _print_info(args.info, args.data_dir, args.seq_len)
    except (OSError, ValueError) as err:  # missing file, bad data, network
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
